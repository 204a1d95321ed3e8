"""A small network of real identities and a signed directory, for tests.

Everything here is real libsodium key material; the only thing fixed is the clock
(``NOW``), so that expiry and validity are exercised without sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from keys.directory import Directory, sign_directory
from keys.identity import Identity
from keys.models import DirectoryEntry, EscalationChain, Role, WorkingHours

NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z, a Friday

AUTHORITIES: dict[str, tuple[str, str, Role]] = {
    "it-tpc": ("Carabinieri TPC", "IT", "national_body"),
    "fr-oclcc": ("OCBC", "FR", "national_body"),
    "fr-desk": ("OCBC duty desk", "FR", "duty_desk"),
    "fr-deputy": ("OCBC deputy", "FR", "national_body"),
    "fr-ca": ("French central authority", "FR", "central_authority"),
    "de-bka": ("BKA cultural property", "DE", "national_body"),
}


@dataclass
class Network:
    root: Identity
    relay: Identity
    ids: dict[str, Identity]
    directory: Directory
    history: list[Directory] = field(default_factory=list)
    relay_tls_pins: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Identity:
        return self.ids[name]

    def entry(self, ident: Identity, role: Role, name: str, country: str) -> DirectoryEntry:
        pub = ident.public_keys()
        esc = EscalationChain()
        hours = None
        if ident.id == "fr-oclcc" and {"fr-deputy", "fr-desk", "fr-ca"} <= set(self.ids):
            esc = EscalationChain(deputies=["fr-deputy"], duty_desk="fr-desk", supervisor="fr-ca")
            hours = WorkingHours(
                tz="Europe/Paris", days=[1, 2, 3, 4, 5], start="08:00", end="18:00"
            )
        return DirectoryEntry(
            id=ident.id,
            name=name,
            country=country,
            role=role,
            signing_keys=pub.signing_keys,
            encryption_keys=pub.encryption_keys,
            escalation=esc,
            hours=hours,
        )

    def entries(self) -> list[DirectoryEntry]:
        relay = self.entry(self.relay, "relay", "Relay", "EU")
        out = [relay.model_copy(update={"tls_spki_sha256": list(self.relay_tls_pins)})]
        for aid, ident in self.ids.items():
            name, country, role = AUTHORITIES.get(aid, (aid.upper(), "XX", "national_body"))
            out.append(self.entry(ident, role, name, country))
        return out

    def republish(
        self, *, now: int = NOW, replace: Iterable[Identity] = (), valid_ms: int | None = None
    ) -> Directory:
        """Sign the next directory version, optionally with updated identities."""
        for ident in replace:
            self.ids[ident.id] = ident
        self.directory = sign_directory(
            self.root,
            network="test-net",
            authorities=self.entries(),
            previous=self.directory,
            now=now,
            valid_ms=valid_ms,
        )
        self.history.append(self.directory)
        return self.directory


def make_network(names: Iterable[str] = AUTHORITIES, *, now: int = NOW) -> Network:
    root = Identity.generate("root", kind="root", now=now - 1000)
    relay = Identity.generate("relay-eu", kind="relay", now=now - 1000)
    ids = {n: Identity.generate(n, now=now - 1000) for n in names}
    net = Network(root=root, relay=relay, ids=ids, directory=None)  # type: ignore[arg-type]
    net.directory = sign_directory(
        root, network="test-net", authorities=net.entries(), previous=None, now=now - 1000
    )
    net.history.append(net.directory)
    return net
