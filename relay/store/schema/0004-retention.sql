-- Relay schema, version 4: indexes for retention (pruning closed messages by age).
CREATE INDEX messages_accepted ON messages (accepted_at);
CREATE INDEX message_attachments_msg ON message_attachments (msg_id);
CREATE INDEX attachments_stored ON attachments (stored_at)
