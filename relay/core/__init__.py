"""The relay's domain core. It imports no aiohttp and takes the time from a clock."""
