"""The relay: the aiohttp server between authorities. (Built in the relay issue.)"""
