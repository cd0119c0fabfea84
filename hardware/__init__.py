"""Hardware: device I/O.

Serial ports (pyserial through Twisted on the asyncio loop), the AT command
engine, sound cards (pyaudio, optional), PTT/COS control lines, and emulators
of the devices dispatchd talks to.
"""
