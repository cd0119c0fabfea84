"""Wiring of the cluster parts into a daemon (kept out of daemon.py, a shared file)."""

from __future__ import annotations

from typing import Any

from dispatch.cluster import ClusterService, LeasedService
from dispatch.cluster_lease import lease_holder

RADIO_LEASE = "radio"


def build_cluster(daemon: Any) -> ClusterService:
    """The cluster service for ``daemon``: hub bridged, campaigns woken on a takeover."""
    settings = daemon.settings
    c = settings.cluster
    http = settings.http
    url = c.advertise_url or (f"http://{http.host}:{http.port}" if http.port else "")
    cluster = ClusterService(
        daemon.db, daemon.audit, daemon.clock, node_id=c.node_id or settings.node.name,
        lease_name=settings.node.name, http_url=url, channel=c.channel,
        heartbeat_s=c.heartbeat_s, dead_after_s=c.dead_after_s, batch_ms=c.batch_ms)
    cluster.attach_hub(daemon.hub.listen, daemon.hub.deliver_remote)
    return cluster


def wire_campaigns(cluster: ClusterService, campaigns: Any) -> None:
    """A dead node's recipients were re-queued: wake this node's sender.  The sender is
    fenced by the cluster: it claims and sends only while this node is still itself."""
    cluster.on_takeover(lambda _node: campaigns._wake.set())
    campaigns.fence = cluster
    cluster.on_fenced(campaigns.abandon_batch)
    if hasattr(campaigns.sender, "hold"):
        # SMPP binds and GSM modems write nothing while this node may not act (woken
        # from a stall, not yet sure it is still itself): queued submits and AT+CMGS
        # wait for the heartbeat.
        campaigns.sender.hold = lambda: not cluster.may_act()


def leased_radio(cluster: ClusterService, radio: Any, services: Any = None) -> LeasedService:
    """The radio gateways behind one cluster lease (a survivor takes them over).

    PTT is refused while this node does not hold the lease with a current heartbeat:
    a node woken from a stall keys nothing before it knows it still drives the radios.
    A node that lost the lease stands by again (``services.standby``) and takes the
    gateways back when the lease is free.
    """
    leased = LeasedService(radio, cluster, RADIO_LEASE, ttl_s=cluster.dead_after_s)
    if services is not None:
        leased.on_standby = lambda why: services.standby(leased.name, why)
    radio.guard = lambda: None if leased.may_act() else (
        "this node does not drive the radio gateways now (another node holds them)")
    return leased


def wire_sip(daemon: Any, cluster: ClusterService | None) -> Any:
    """Persist the call takers' states (a service, returned); when clustered, mirror them
    across nodes and complete a dead node's call records from its events."""
    from dispatch.acd_store import AcdCluster
    from dispatch.cluster_cdr import CallShadow

    if cluster is not None:
        shadow = CallShadow(daemon.db, daemon.audit, daemon.clock,
                            refile=daemon.sip.recorder.refile)
        cluster.on_remote(shadow.note)
        cluster.on_takeover(shadow.node_dead)

    node = cluster.node_id if cluster is not None else daemon.settings.node.name
    acd = AcdCluster(daemon.db, daemon.sip.b2bua, node, daemon.clock,
                     bindings=daemon.sip.bindings)
    daemon.hub.listen(acd.on_local)
    if cluster is not None:
        cluster.on_remote(acd.on_remote)
        cluster.keep_local(acd.is_mirror)
        cluster.on_takeover(acd.node_dead)
    return acd


def forward_calls(app: Any, cluster: ClusterService, sip: Any, radio: Any = None) -> Any:
    """Forward supervisor commands about another node's call to that node, and radio
    commands to the node that drives the radio gateways (dispatch/cluster_radio.py)."""
    from dispatch.cluster_forward import ForwardCallCommands

    if sip is not None:
        app.add_middleware(ForwardCallCommands, node=cluster.node_id, owner=cluster.calls.owner,
                           url_of=cluster.url_of,
                           is_local=lambda call_id: call_id in sip.b2bua.calls)
    if radio is not None:
        from dispatch.cluster_radio import ForwardRadioCommands

        app.add_middleware(ForwardRadioCommands, node=cluster.node_id,
                           is_local=lambda: _drives_now(cluster, radio),
                           holder=lambda: lease_holder(cluster, RADIO_LEASE))
    return app


def radio_relay(daemon: Any) -> Any:
    """The SSH console's path to the node that drives the radios (None on a single node)."""
    cluster, radio = daemon.cluster, daemon.radio
    if cluster is None or radio is None:
        return None
    from dispatch.cluster_radio import RadioRelay

    return RadioRelay(node=cluster.node_id, is_local=lambda: _drives_now(cluster, radio),
                      holder=lambda: lease_holder(cluster, RADIO_LEASE), users=daemon.users)


def _drives(radio: Any) -> bool:
    """True while this node drives the radio gateways (its guard has nothing against it)."""
    return radio.guard is None or radio.guard() is None


async def _drives_now(cluster: ClusterService, radio: Any) -> bool:
    """:func:`_drives`, after settling a doubt: a node that holds the lease but may not act
    (woken from a stall) beats once first — taken over meanwhile, it lets go of the
    gateways then (ports closed) and the command goes to the new holder."""
    if _drives(radio):
        return True
    if cluster.holds(RADIO_LEASE):
        await cluster.confirm(cluster.generation)
        return _drives(radio)
    return False
