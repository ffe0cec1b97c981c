"""Loss recovery on the receive side (server/rtc/recovery.py), on a clock the test moves: NACKs retried each
round trip and a half until the packet comes or is too old, a gap given up at its deadline with a keyframe
request that is repeated until a keyframe arrives."""

from __future__ import annotations

import itertools
import queue

import pytest
from aiortc.rtp import RtpPacket

from server.rtc import recovery
from server.rtc.nacks import RetryingNackGenerator, RoundTrip
from server.rtc.recovery import RecoveringJitterBuffer, is_keyframe

pytestmark = pytest.mark.unit

VP8 = 96


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def vp8_packet(seq: int, frame: int, first: bool, last: bool, key: bool = False) -> RtpPacket:
    """Packet `seq` of VP8 frame `frame` (3,000 ticks apart): the descriptor's S bit on a frame's first
    packet, the frame tag's P bit clear on a key frame's."""
    packet = RtpPacket(
        payload_type=VP8, marker=int(last), sequence_number=seq % 65536, timestamp=frame * 3000, payload=b""
    )
    packet.payload = bytes([0x10 if first else 0x00]) + bytes([0x00 if key and first else 0x01]) + bytes(10)
    packet._data = packet.payload[1:]  # type: ignore[attr-defined]  # what aiortc's depayloader stores
    return packet


def frames_of(count: int, per_frame: int = 3, start_seq: int = 0, key_first: bool = True) -> list[RtpPacket]:
    packets = []
    for f in range(count):
        for p in range(per_frame):
            seq = start_seq + f * per_frame + p
            packets.append(vp8_packet(seq, f, p == 0, p == per_frame - 1, key=key_first and f == 0))
    return packets


def test_a_gap_is_nacked_at_once_then_again_each_round_trip_and_a_half_until_it_comes() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock, echoes=0)
    packets = frames_of(4)
    assert not nacks.add(packets[0])
    assert not nacks.add(packets[3])  # a gap: reordered packets may still fill it within a few ms
    clock.now += 0.006
    assert nacks.add(packets[4]) and nacks.missing == {1, 2}  # then it is asked for
    clock.now += 0.05
    assert not nacks.add(packets[5])  # asked 50 ms ago: not yet
    clock.now += 0.11  # 160 ms after the first request: past 1.25 round trips
    assert nacks.add(packets[6]) and nacks.missing == {1, 2}
    clock.now += 0.02
    assert not nacks.add(packets[1])  # a retransmission ends the asking for it ...
    clock.now += 0.2
    assert nacks.add(packets[7]) and nacks.missing == {2}  # ... but not for the other


def test_requests_fall_due_between_packets_too() -> None:
    """After a frame's last packet the next comes a frame interval later: a first request, its echo and a
    retry are sent when due (`poll`, on the receiver's timer), not when that packet comes."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    packets = frames_of(4)
    assert nacks.poll() == []  # nothing seen yet
    nacks.add(packets[0])
    assert not nacks.add(packets[3]) and nacks.ssrc == packets[3].ssrc  # a gap, then no packet for a while
    assert nacks.poll() == []  # within the reordering wait
    clock.now += 0.006
    assert nacks.poll() == [1, 2]  # asked for without a packet
    assert nacks.poll() == []  # once
    clock.now += 0.021
    assert nacks.poll() == [1, 2]  # the echo, a fifth of a round trip later
    clock.now += 0.02
    assert nacks.poll() == [1, 2]  # and the second, two fifths after the request
    clock.now += 0.04
    assert nacks.poll() == [4, 5]  # 87 ms without a packet: a silence, and what should have come asked for
    assert nacks.poll() == []
    assert not nacks.add(packets[1])  # one repaired
    clock.now += 0.06  # 1.25 round trips after the first request
    assert nacks.poll() == [2]


def test_each_request_is_echoed_twice_a_fifth_of_a_round_trip_apart() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    packets = frames_of(12, per_frame=1)
    nacks.add(packets[0])
    nacks.add(packets[2])
    clock.now += 0.006
    assert nacks.add(packets[3]) and nacks.missing == {1}  # asked
    clock.now += 0.01
    assert not nacks.add(packets[4])  # 10 ms later: not yet
    clock.now += 0.011
    assert nacks.add(packets[5]) and nacks.missing == {1}  # 21 ms after: the echo (0.2 x 100 ms)
    clock.now += 0.01
    assert not nacks.add(packets[6])  # 31 ms after: not yet
    clock.now += 0.01
    assert nacks.add(packets[7]) and nacks.missing == {1}  # 41 ms after: the second echo
    clock.now += 0.03
    assert not nacks.add(packets[8])  # twice a try
    clock.now += 0.07
    assert nacks.add(packets[9]) and nacks.missing == {1}  # 1.25 round trips after the first: a retry
    clock.now += 0.021
    assert nacks.add(packets[10]) and nacks.missing == {1}  # and its echo


def test_after_a_silence_the_packets_that_should_have_come_are_asked_for_once() -> None:
    """A burst that takes a frame's last packets and the next frames' whole leaves no gap to see until a
    packet comes again: after a frame interval and a half without one, the packets a frame and a half
    carries are asked for by number, once a silence."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    packets = frames_of(12, per_frame=2)
    for packet in packets[:16]:  # eight frames, 33 ms apart
        nacks.add(packet)
        clock.now += 1 / 60
    assert nacks.interval == pytest.approx(1 / 30) and nacks.per_frame == 2
    clock.now += 0.02  # 37 ms since the last packet: a frame interval, no more
    assert nacks.poll() == []
    clock.now += 0.02  # 57 ms: a silence (1.5 intervals)
    assert nacks.poll() == [16, 17, 18] and nacks.silences == 1
    clock.now += 0.1
    assert nacks.poll() == []  # once
    assert not nacks.add(packets[16])  # what came was not lost: no gap, and the next silence is a new one ...
    clock.now += 0.06
    assert nacks.poll() == []  # ... half as long again, since that one lost nothing
    clock.now += 0.02
    assert nacks.poll() == [17, 18, 19, 20, 21] and nacks.silences == 2  # what 75 ms carry


def test_silences_that_lost_nothing_widen_the_next_and_one_that_lost_packets_narrows_it() -> None:
    """A pause of the sender's (or of a host, or a queue's delay swinging) is a silence that lost nothing:
    asking ahead after it only brings copies of packets on their way, so the next silence waits longer."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    packets = frames_of(40, per_frame=1)
    for packet in packets[:5]:
        nacks.add(packet)
        clock.now += 1 / 30
    base = nacks.silence()
    for packet in packets[5:8]:  # each after a silence, each the next in line
        clock.now += base * nacks.widening
        assert nacks.poll()
        nacks.add(packet)
    assert nacks.false_silences == 3 and nacks.silence() == pytest.approx(1.5**3 * base)
    clock.now += nacks.silence()
    assert nacks.poll()
    nacks.add(packets[10])  # two packets missing: the silence was a loss
    assert nacks.widening == pytest.approx(1.5**2) and nacks.false_silences == 3
    for packet in packets[11:30]:
        nacks.add(packet)
    assert nacks.widening == pytest.approx(1.5**2)  # packets alone do not narrow it


def test_a_silence_waits_for_what_jitter_spreads_and_for_a_slower_frame_rate() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    nacks.reorder_wait = 0.02  # learnt from 10 ms of jitter
    for packet in frames_of(20, per_frame=1)[:20]:  # 15 fps
        nacks.add(packet)
        clock.now += 1 / 15
    # The last packet came 67 ms ago (the loop's last step): a frame interval, no silence at 15 fps ...
    assert nacks.interval == pytest.approx(1 / 30)  # ... as its timestamps say 30 fps: the test's frames
    assert nacks.silence() == pytest.approx(1 / 30 + 0.04)  # an interval and twice the reordering wait
    assert nacks.until_silence(clock.now) == pytest.approx(1 / 30 + 0.04 - 1 / 15)


def test_the_round_trip_is_learnt_from_repairs_and_corrected_upwards() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    nacks = RetryingNackGenerator(rtt, clock)
    nacks.add(vp8_packet(0, 0, True, True))
    for lost in range(1, 200, 2):  # every other packet lost, each repaired 20 ms after it was asked for
        nacks.add(vp8_packet(lost + 1, lost + 1, True, True))
        clock.now += 0.006
        assert nacks.add(vp8_packet(lost + 1, lost + 1, True, True)) and nacks.missing == {lost}
        clock.now += 0.02
        nacks.add(vp8_packet(lost, lost, True, True))
    assert rtt.estimate == pytest.approx(0.02, abs=0.005)
    # the path slows to 150 ms: requests are retried too soon, but each repair, timed from its first
    # request, pulls the estimate up, until retries come no sooner than the round trip
    for lost in range(201, 400, 2):
        nacks.add(vp8_packet(lost + 1, lost + 1, True, True))
        for _ in range(15):
            clock.now += 0.01
            nacks.add(vp8_packet(lost + 1, lost + 1, True, True))  # a duplicate: time passes, retries go out
        nacks.add(vp8_packet(lost, lost, True, True))
    assert rtt.estimate == pytest.approx(0.15, abs=0.02)
    assert rtt.retry_after() > 0.15


def test_packets_that_come_out_of_order_are_not_asked_for() -> None:
    clock = Clock()
    nacks = RetryingNackGenerator(RoundTrip(estimate=0.1), clock)
    nacks.add(vp8_packet(0, 0, True, True))
    asked = 0
    for seq in range(1, 400, 2):  # every other packet 8 ms late, a packet every 3 ms
        asked += nacks.add(vp8_packet(seq + 1, seq + 1, True, True))
        clock.now += 0.003
        asked += nacks.add(vp8_packet(seq + 2, seq + 2, True, True)) if seq + 2 < 400 else 0
        clock.now += 0.005
        nacks.add(vp8_packet(seq, seq, True, True))
    assert 0.009 < nacks.reorder_wait <= 0.05
    assert asked <= 10  # the first few, before the wait was learnt


def test_asking_stops_after_max_tries_or_max_age() -> None:
    clock = Clock()
    nacks = RetryingNackGenerator(RoundTrip(estimate=0.02), clock, max_tries=3, max_age=10.0, echoes=0)
    seq, asked = 0, 0
    nacks.add(vp8_packet(seq, 0, True, True))
    nacks.add(vp8_packet(2, 2, True, True))  # 1 is lost for good
    for seq in range(3, 40):
        clock.now += 0.05
        if nacks.add(vp8_packet(seq, seq, True, True)) and 1 in nacks.missing:
            asked += 1
    assert asked == 3
    aged = RetryingNackGenerator(RoundTrip(estimate=0.02), clock, max_tries=100, max_age=0.3)
    aged.add(vp8_packet(0, 0, True, True))
    aged.add(vp8_packet(2, 2, True, True))
    clock.now += 0.31
    assert not aged.add(vp8_packet(3, 3, True, True)) and 1 not in aged.asked


def test_a_gap_that_outlives_its_deadline_is_skipped_and_a_keyframe_asked_for_until_it_comes() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    packets = frames_of(20)
    out = []
    for packet in packets[:3]:  # frame 0, a key frame
        out.append(buffer.add(packet))
    assert out[-1][1] is not None and is_keyframe(out[-1][1])
    # frame 1 loses its middle packet for good; frames 2.. keep coming, 33 ms apart
    delivered, plis = [], []
    for i, packet in enumerate(packets[3:], start=3):
        if i == 4:
            continue
        if i % 3 == 0:
            clock.now += 0.033
        pli, frame = buffer.add(packet)
        plis.append((clock.now, pli))
        if frame is not None:
            delivered.append((clock.now, frame.timestamp // 3000))
    first_time, first_frame = delivered[0]
    assert first_frame == 2  # frame 1 was given up, frame 2 is the next that starts after the gap
    assert first_time - 100.0 <= rtt.deadline() + 0.07  # within the deadline (and a frame's packets)
    # then every frame in order, none held: the backlog drains a frame a packet (this one has 3 a frame)
    assert [f for _, f in delivered] == list(range(2, 2 + len(delivered))) and delivered[-1][1] >= 18
    requests = [t for t, pli in plis if pli]
    assert requests and requests[0] == pytest.approx(first_time, abs=1e-9)  # a keyframe asked for at once
    assert len(requests) >= 2 and all(b - a >= rtt.retry_after() - 1e-9 for a, b in itertools.pairwise(requests))
    # a key frame ends the asking
    pli, frame = buffer.add(vp8_packet(60, 20, True, True, key=True))
    assert frame is not None and is_keyframe(frame)
    clock.now += 1.0
    assert not buffer.add(vp8_packet(61, 21, True, True))[0]
    assert buffer.skips == 1


def test_every_gap_past_its_deadline_is_given_up_at_once_and_a_fresh_one_still_waits() -> None:
    """A narrow link's first second leaves dozens of frames each missing a packet: given up one deadline at
    a time, they kept the picture still for seconds after the link had settled."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    packets = frames_of(40, per_frame=2)
    buffer.add(packets[0])
    assert buffer.add(packets[1])[1] is not None  # frame 0
    for f in range(1, 20):  # frames 1-18 lose their second packet for good; frame 19 is whole
        for packet in packets[2 * f : 2 * f + (2 if f == 19 else 1)]:
            clock.now += 0.005
            assert buffer.add(packet)[1] is None
    clock.now += 0.5  # then nothing for half a second (the link's queue): every one of those gaps is stale
    delivered: list[tuple[float, int]] = []
    late = packets[61]  # frame 30's second packet comes 50 ms late: a fresh gap, repaired in time
    for packet in packets[40:]:
        if packet is late:
            continue
        clock.now += 0.0165
        frames = [buffer.add(packet)[1]]
        if packet.sequence_number == 64:
            frames.append(buffer.add(late)[1])
        frames += buffer.drain() if frames[-1] is not None else []
        delivered += [(clock.now, f.timestamp // 3000) for f in frames if f is not None]
    stalled_until = 100.0 + 0.1 + 0.5
    assert delivered[0] == (pytest.approx(stalled_until + 0.0165), 19)  # on the first packet after the stall
    assert [f for _, f in delivered] == list(range(19, 40))  # then every frame, the late one's included
    assert all(t - stalled_until < 0.03 * (f - 18) + 0.06 for t, f in delivered)  # none held a deadline
    assert buffer.skips == 1 and buffer.awaiting_key


def test_a_gap_repaired_in_time_costs_no_frame_and_no_keyframe() -> None:
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    packets = frames_of(6)
    delivered = []
    for i, packet in enumerate(packets):
        if i == 4:
            continue
        clock.now += 0.011
        pli, frame = buffer.add(packet)
        assert not pli
        if i == 8:
            _, repaired = buffer.add(packets[4])  # the retransmission, 50 ms late
            delivered.append(repaired)
        if frame is not None:
            delivered.append(frame)
    assert [f.timestamp // 3000 for f in delivered if f is not None][:3] == [0, 1, 2]
    assert buffer.skips == 0


def test_lossy_reordered_restarting_streams_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever arrives (losses, duplicates, a sender that starts over, stray packets), recovery runs inside
    aiortc's receive loop: an exception there would end the connection."""
    import random

    for seed in range(60):
        rng = random.Random(seed)
        clock, rtt = Clock(), RoundTrip(estimate=0.05)
        nacks = RetryingNackGenerator(rtt, clock)
        buffer = RecoveringJitterBuffer(rtt, nacks, clock, frozenset({VP8}))
        per, offset = rng.randint(1, 12), rng.randint(0, 65535)
        for i, packet in enumerate(frames_of(200, per_frame=per)):
            clock.now += 0.033 / per
            if rng.random() < 0.005:  # the sender starts over from another sequence number
                offset = rng.randint(0, 65535)
            packet.sequence_number = (packet.sequence_number + offset) % 65536
            if rng.random() < 0.1:
                continue
            if rng.random() < 0.02:
                packet = vp8_packet(rng.randint(0, 65535), rng.randint(0, 1000), rng.random() < 0.5, i % 2 == 0)
            nacks.add(packet)
            buffer.add(packet)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_after_a_skip_the_backlog_is_handed_over_at_once() -> None:
    """At a low bitrate a frame is one or two packets: one frame a packet would take seconds to hand over
    what piled up behind a gap."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    packets = frames_of(20, per_frame=1)
    buffer.add(packets[0])
    out = []
    for packet in packets[2:]:  # frame 1 lost for good
        clock.now += 0.033
        _, frame = buffer.add(packet)
        if frame is not None:
            out.append(frame.timestamp // 3000)
            out += [f.timestamp // 3000 for f in buffer.drain()]
    assert out == list(range(2, 20))  # every frame after the gap, in order, none held back
    assert buffer.returned_timestamp // 3000 == 19  # the last frame add() handed over, as it came


def test_no_keyframe_request_while_a_keyframe_is_arriving() -> None:
    """On a narrow link a keyframe takes longer than a round trip to arrive: asking again meanwhile would
    only make the sender start another."""
    clock, rtt = Clock(), RoundTrip(estimate=0.05)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    buffer.awaiting_key = True  # a gap was given up
    plis = []
    keyframe = [vp8_packet(93 + i, 3, i == 0, i == 29, key=True) for i in range(30)]  # frame 3
    for packet in frames_of(3, per_frame=1, start_seq=90, key_first=False):
        clock.now += 0.1
        plis.append(buffer.add(packet)[0])
    assert all(plis)  # asked each round trip
    plis = []
    for packet in keyframe[:-1]:  # its packets trickle in over 0.9 s
        clock.now += 0.03
        plis.append(buffer.add(packet)[0])
    assert not any(plis)
    _, frame = buffer.add(keyframe[-1])
    assert frame is not None and is_keyframe(frame) and not buffer.awaiting_key


def test_one_late_packet_does_not_delay_the_next_repairs() -> None:
    """Packets usually 5 ms out of order, one 45 ms (a stall on a host): the next lost packet is still asked
    for within 10 ms, not after the outlier's 50 ms (aiortc-like max-with-decay waited 40+ ms for 60 gaps)."""
    clock = Clock()
    nacks = RetryingNackGenerator(RoundTrip(estimate=0.1), clock)
    nacks.add(vp8_packet(0, 0, True, True))
    seq = 1
    for late in [0.005] * 40 + [0.045] + [0.005] * 20:
        nacks.add(vp8_packet(seq + 1, seq + 1, True, True))  # seq comes after seq + 1, `late` later
        clock.now += late
        nacks.add(vp8_packet(seq, seq, True, True))
        seq += 2
    nacks.add(vp8_packet(seq + 1, seq + 1, True, True))  # seq is lost for good
    asked_after = None
    for step in range(1, 60):
        clock.now += 0.001
        if nacks.add(vp8_packet(seq + 1, seq + 1, True, True)) and seq in nacks.missing:  # a duplicate: time passes
            asked_after = step / 1000
            break
    assert asked_after is not None and asked_after <= 0.01


class LatestFrameConsumer:
    """The server's pipeline as a decoder queue's reader sees it: keeps only the newest of the frames that
    wait for it, and is busy 12 ms with each."""

    def __init__(self, frames: queue.Queue, clock: Clock) -> None:
        self.frames, self.clock = frames, clock
        self.arrived: list[tuple[float, int]] = []

    def take(self) -> None:
        """What the decoder thread hands over now (each get may wait for the frame's turn)."""
        while not self.frames.empty():
            item = self.frames.get()
            self.arrived.append((self.clock(), item[1].timestamp // 3000))

    def kept(self) -> list[int]:
        kept, free_at = [], 0.0
        for i, (at, number) in enumerate(self.arrived):
            if i + 1 < len(self.arrived) and self.arrived[i + 1][0] <= max(at, free_at):
                continue  # replaced by a newer one before the pipeline was free
            free_at = max(at, free_at) + 0.012
            kept.append(number)
        return kept


@pytest.mark.parametrize("pace", [False, True])
def test_a_backlog_reaches_a_newest_frame_consumer_paced(pace: bool) -> None:
    """After a gap is repaired, the frames behind it are complete at once: handed over together, a reader
    that keeps the newest frame gets one of five; paced at twice their rate, it gets each of the newest."""
    clock, rtt = Clock(), RoundTrip(estimate=0.1)
    buffer = RecoveringJitterBuffer(rtt, None, clock, frozenset({VP8}))
    decoder: queue.Queue = queue.Queue()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    recovery._decode_backlogs(decoder, buffer, pace, clock, sleep)
    consumer = LatestFrameConsumer(decoder, clock)
    packets = frames_of(6, per_frame=2)
    for packet in packets[:2] + packets[3:] + packets[2:3]:  # packet 2 (frame 1's first) comes last
        clock.now += 0.016
        _, frame = buffer.add(packet)
        if frame is not None:
            decoder.put(("vp8", frame))
        consumer.take()
    assert [number for _, number in consumer.arrived] == [0, 1, 2, 3, 4, 5]
    assert consumer.kept() == ([0, 1, 2, 3, 4, 5] if pace else [0, 5])
