"""The leader lease on a fake clock: who acts, when it stops acting, and that two never act at once."""

from __future__ import annotations

from portero.cluster import lease
from portero.cluster.lease import Acquired, Follow, HeldByOther, Lead, Lease, Renewed, Role, Timing, Unreachable

T = Timing(lease_s=5.0, renew_every_s=1.5, acquire_every_s=0.5)


def test_a_follower_acquires_then_renews_and_the_lease_counts_from_when_the_call_was_sent() -> None:
    start = Lease()
    assert lease.attempt(start) == "acquire"

    led, commands = lease.settle(start, Acquired(7, "a url 7"), sent_at=100.0, now=100.3, timing=T)

    assert commands == [Lead(7)]
    assert led.role is Role.LEADER
    assert led.token == 7
    assert led.valid_until == 100.0 + 5.0 - T.margin_s  # from the send, not the answer
    assert led.next_try_at == 100.3 + 1.5
    assert lease.attempt(led) == "renew"

    renewed, commands = lease.settle(led, Renewed(), sent_at=101.8, now=101.9, timing=T)
    assert commands == []
    assert renewed.valid_until == 101.8 + 5.0 - T.margin_s


def test_a_leader_cut_off_from_redis_keeps_acting_until_its_own_deadline_then_pauses() -> None:
    led, _ = lease.settle(Lease(), Acquired(3, "a url 3"), sent_at=0.0, now=0.0, timing=T)
    now = 1.5
    while now < led.valid_until:  # every renewal fails; the retries come faster than renewals
        led, commands = lease.settle(led, Unreachable("refused"), sent_at=now, now=now, timing=T)
        assert commands == []
        assert led.role is Role.LEADER
        assert led.reachable is False
        assert led.next_try_at == now + 0.5
        assert lease.expire(led, now)[1] == []
        now = lease.wake_at(led)

    paused, commands = lease.expire(led, led.valid_until)

    assert paused.role is Role.FOLLOWER
    assert commands == [Follow("lease not renewed in time (refused)")]
    assert led.valid_until == 5.0 - T.margin_s  # before Redis lets anybody else take it (at 5.0)


def test_the_leader_wakes_for_its_deadline_even_when_the_next_call_is_later() -> None:
    led = Lease(Role.LEADER, 1, valid_until=10.0, next_try_at=12.0, holder="a url 1")
    assert lease.wake_at(led) == 10.0
    assert lease.wake_at(Lease(next_try_at=3.0)) == 3.0


def test_a_renewal_that_finds_another_holder_ends_leadership_at_once() -> None:
    led = Lease(Role.LEADER, 4, valid_until=50.0, next_try_at=10.0, holder="a url 4")

    following, commands = lease.settle(led, HeldByOther("b url 5"), sent_at=10.0, now=10.1, timing=T)

    assert commands == [Follow("the lease is held by b url 5 now")]
    assert following.role is Role.FOLLOWER
    assert following.holder == "b url 5"
    assert following.next_try_at == 10.1 + 0.5


def test_a_follower_that_finds_the_lease_taken_remembers_who_leads_and_tries_again_later() -> None:
    following, commands = lease.settle(Lease(), HeldByOther("b url 5"), sent_at=0.0, now=0.01, timing=T)

    assert commands == []
    assert following.role is Role.FOLLOWER
    assert following.holder == "b url 5"
    assert following.next_try_at == 0.51


def test_demotion_pauses_a_leader_and_is_nothing_for_a_follower() -> None:
    led = Lease(Role.LEADER, 4, valid_until=50.0, holder="a url 4")

    following, commands = lease.demote(led, "fenced write refused", now=20.0, timing=T)

    assert commands == [Follow("fenced write refused")]
    assert following.role is Role.FOLLOWER
    assert following.token == 4  # kept: the store still fences this portero's late writes with it
    assert lease.demote(following, "again", now=21.0, timing=T) == (following, [])


def test_a_leader_that_stepped_down_leaves_the_lease_to_the_others_for_a_lease_s_time() -> None:
    """It gave the lease back; its own next try must not take it back before the others can (they try every
    `acquire_every_s`), not even when a renewal sent before the step down is answered after it."""
    led = Lease(Role.LEADER, 4, valid_until=50.0, next_try_at=20.3, holder="a url 4")
    following, _ = lease.demote(led, "going away", now=20.0, timing=T)
    assert following.next_try_at == 20.0 + T.lease_s

    late, commands = lease.settle(following, Renewed(), sent_at=19.99, now=20.01, timing=T)
    assert commands == []
    assert late.role is Role.FOLLOWER
    assert late.next_try_at == 25.0  # not 20.51

    seen, _ = lease.settle(following, HeldByOther(None), sent_at=19.99, now=20.01, timing=T)
    assert seen.next_try_at == 25.0
    after, _ = lease.settle(seen, HeldByOther("b url 5"), sent_at=25.0, now=25.01, timing=T)
    assert after.next_try_at == 25.51  # then it follows as any follower does


def test_two_porteros_on_one_lease_never_lead_at_once_whatever_the_timing() -> None:
    """A scripted Redis (a key with a TTL) and two electors on one fake clock: A is cut off at 3 s, B takes
    over; at no instant do both believe they lead."""
    redis: dict[str, float | str] = {}
    epoch = 0

    def call(name: str, state: Lease, now: float, reachable: bool) -> lease.Outcome:
        nonlocal epoch
        if not reachable:
            return Unreachable("cut off")
        holder = redis.get("holder") if float(redis.get("expires", 0.0)) > now else None
        if lease.attempt(state) == "acquire":
            if holder is not None:
                return HeldByOther(str(holder))
            epoch += 1
            redis.update(holder=f"{name} url {epoch}", expires=now + T.lease_s)
            return Acquired(epoch, f"{name} url {epoch}")
        if holder == state.holder:
            redis["expires"] = now + T.lease_s
            return Renewed()
        return HeldByOther(str(holder) if holder else None)

    leases = {"a": Lease(), "b": Lease(next_try_at=0.05)}
    tokens: list[tuple[str, int]] = []
    now = 0.0
    while now < 20.0:
        for name in ("a", "b"):
            state, commands = lease.expire(leases[name], now)
            if now >= state.next_try_at:
                outcome = call(name, state, now, reachable=not (name == "a" and 3.0 <= now < 12.0))
                state, more = lease.settle(state, outcome, now, now, T)
                commands += more
            tokens += [(name, c.token) for c in commands if isinstance(c, Lead)]
            leases[name] = state
        leading = [n for n, s in leases.items() if s.role is Role.LEADER]
        assert len(leading) <= 1, f"both lead at {now:.2f}"
        now = round(now + 0.05, 2)

    assert tokens == [("a", 1), ("b", 2)]  # B took over once, with a greater token; A did not come back
    assert leases["b"].role is Role.LEADER
    assert leases["a"].holder == "b url 2"
