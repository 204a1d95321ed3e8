"""Client side: library, daemon and sender CLI. (Built in the relay issue.)"""
