"""Radio: talkgroups, PTT floor control, patches and gateways.

TETRA PEI and satellite phones over serial, DMR Homebrew and RoIP over IP,
sound-card radios; unit positions from location reports.  Builds on
:mod:`hardware` for device I/O.
"""
