"""Dispatch: the application core and composition root.

Daemon lifecycle, configuration, storage, audit trail, users and roles,
events, incidents, units, response plans, notifications and the operator
interfaces (HTTP API, WebSocket events, web console, SSH console).  Nothing
imports :mod:`dispatch`; it wires every other package together.
"""
