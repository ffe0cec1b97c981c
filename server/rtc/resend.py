"""What the server resends when a receiver NACKs a packet: aiortc answers each NACK with one
retransmission (RTX), so a lost retransmission costs the viewer another round trip (a freeze of 200 ms or
more at 40 ms each way). Here each NACKed packet is resent three times, a fifth of a round trip apart
(10-30 ms: past most loss bursts), whatever the receiver does: browsers NACK once and ask again only a
round trip later. With two copies, at 5% bursty loss each way about one repair in a hundred still lost
both (the second copy, 20 ms after a lost first, is lost about twice as often as any packet), and each
such repair froze the picture 200-250 ms: one to three times in 15 s. A NACK for a packet resent less than
three spacings (30-90 ms) ago is not answered again: the copies have only just gone, and the request came
before any could arrive (a receiver that echoes its requests, as Backdrop's own does, or retries too
soon; on loopback, answering those too made a receiver that lost 1.8 s of packets get four copies of each
every 12 ms). A NACK for a packet not sent yet (a receiver asks for what should have come after a silence,
nacks.py) is passed over without being noted, so the request for it once it is sent and lost is answered.
While a narrow link's queue overflows (congestion.py: over 10% lost where the link was seen to overflow),
one copy only."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiortc import RTCRtpSender

from . import aiortc_hooks
from .nacks import Clock, spacing

REMEMBERED = 512  # packets whose last resend is remembered (aiortc keeps 128 in its history)
COPIES = 3  # of each NACKed packet, on a link that is not congested
ECHO_WINDOW = 3  # spacings after an answer within which a request for the same packet is an echo of it


class Resender:
    """Answers a NACK for `sequence` by resending it now and `copies - 1` times more, `spacing` apart,
    unless it was answered less than ECHO_WINDOW spacings ago."""

    def __init__(
        self,
        retransmit: Callable[[int], Awaitable[None]],
        round_trip: Callable[[], float | None],
        clock: Clock = time.monotonic,
        later: Callable[..., object] | None = None,
        holds: Callable[[int], bool] | None = None,
    ) -> None:
        self.retransmit, self.round_trip, self.clock, self.holds = retransmit, round_trip, clock, holds
        self.later = later  # (delay, callback, *args) -> None; the running loop's call_later by default
        self.resent: OrderedDict[int, float] = OrderedDict()  # sequence number -> when last resent
        self.copies = COPIES  # 1 while the link is congested (congestion.follow_losses)
        self.answered = self.ignored = 0

    def spacing(self) -> float:
        return spacing(self.round_trip() or 0.1)

    def due(self, sequence: int) -> bool:
        """Whether a NACK for `sequence` now is answered (and noted as answered)."""
        now = self.clock()
        last = self.resent.get(sequence)
        if last is not None and now - last < ECHO_WINDOW * self.spacing():
            self.ignored += 1
            return False
        self.resent[sequence] = now
        self.resent.move_to_end(sequence)
        while len(self.resent) > REMEMBERED:
            self.resent.popitem(last=False)
        self.answered += 1
        return True

    async def __call__(self, sequence: int) -> None:
        if self.holds is not None and not self.holds(sequence):
            return  # not sent yet, or out of the history: nothing to resend, and nothing to note
        if not self.due(sequence):
            return
        await self.retransmit(sequence)
        later = self.later or asyncio.get_running_loop().call_later
        for copy in range(1, self.copies):
            later(copy * self.spacing(), self._again, sequence)

    def _again(self, sequence: int) -> None:
        task = asyncio.ensure_future(self.retransmit(sequence))
        task.add_done_callback(_quiet)


def _quiet(task: asyncio.Future) -> None:
    """A resend on a connection that closed meanwhile is nothing to report."""
    if not task.cancelled():
        task.exception()


def resend_copies(sender: RTCRtpSender) -> Resender:
    """Make `sender` answer NACKs with COPIES copies (see the module); returns its Resender (its counters)."""
    resender = Resender(
        aiortc_hooks.retransmitter(sender),
        lambda: aiortc_hooks.round_trip(sender),
        holds=lambda sequence: aiortc_hooks.holds(sender, sequence),
    )
    aiortc_hooks.set_retransmitter(sender, resender)
    return resender
