"""The worker protocol: how the server's side follows each worker's jobs, written once for
the simulator's event loop (virtual time) and the real backends' driver (real time).

A worker is idle or runs one job. :meth:`WorkerProtocol.start` asks the policy which version
an idle worker reads, and hands the job to the backend's ``launch``. :meth:`arrive` takes
a finished job's gradient to the policy and records its fate. :meth:`follow` carries out a
decision: it records the update and cancels and restarts the workers the decision names,
and it starts the workers it releases. :meth:`lose` takes a worker out for good. The clock
and the transport stay with the caller: times are passed in, and ``launch`` is the only way
a job leaves.

Each job has a token: a result whose token is not the worker's current one (the job was
cancelled, or the worker lost) is stale, and :meth:`current` says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridsgd.policies.base import Decision, Policy, Update
from hybridsgd.record import CANCELLED, FATE_CODE, PENDING, Recorder

_BUFFERED = "buffered"


class WorkerProtocol:
    """Start, arrive, cancel, lose and follow for a policy's W workers (see the module doc).

    ``launch(w, token, slot, t)`` sends worker ``w`` job ``token`` on its minibatch ``slot``
    at time ``t`` and returns the transport's handle of the job, given back to
    ``finish(handle)`` when the job ends (arrived, cancelled or lost). ``request(w)`` says
    which version an idle worker reads (default: the policy's; a real backend's
    coordinator keeps what delay compensation needs of it). ``push(w, read, gid,
    t, *extra)`` decides a gradient's fate (default: the policy's ``push``; a real backend
    passes the gradient as ``extra`` to its coordinator); ``decide_loss(w, t, shrink=)``
    answers a loss (default: the policy's ``lose``). ``on_update(update, t)`` runs after
    each update is recorded, ``on_cancel(w, token)`` before a running job is cancelled by a
    decision.

    >>> from hybridsgd.policies import sync
    >>> from hybridsgd.record import Recorder
    >>> jobs = []
    >>> p = WorkerProtocol(sync(2), Recorder(2), launch=lambda w, tok, s, t: jobs.append(w))
    >>> p.start(0, 0.0); p.start(1, 0.0); jobs
    [0, 1]
    >>> str(p.arrive(0, 1.0).fate), p.arrive(1, 2.0).update.version
    ('buffered', 1)
    """

    def __init__(
        self,
        policy: Policy,
        recorder: Recorder,
        *,
        launch: Callable[[int, int, int, float], Any],
        request: Callable[[int], int | None] | None = None,
        push: Callable[..., Decision] | None = None,
        decide_loss: Callable[..., Decision] | None = None,
        finish: Callable[[Any], None] | None = None,
        on_update: Callable[[Update, float], None] | None = None,
        on_cancel: Callable[[int, int], None] | None = None,
    ) -> None:
        W = policy.workers
        self.policy, self.rec = policy, recorder
        self.launch, self.finish = launch, finish
        self.request = request or policy.request
        self.push = push or policy.push
        self.decide_loss = decide_loss or policy.lose
        self.on_update, self.on_cancel = on_update, on_cancel
        self.token = [0] * W  # the current job of each worker
        self.busy = [False] * W
        self.read = [0] * W  # version the current job reads
        self.began = [0.0] * W  # when it started
        self.slot = [0] * W  # its minibatch (the worker's k-th)
        self.next_slot = [0] * W
        self.handle: list[Any] = [None] * W
        self.lost: set[int] = set()
        #: jobs sized by time (the recorder keeps steps): the minibatches of each worker's
        #: running job, set by ``launch`` (drawn with its time) or by the caller before
        #: :meth:`arrive` (counted by a real worker), and where the next job's minibatches
        #: begin in the worker's stream: after those of every job it sent
        self.size = [0] * W
        self.position = [0] * W

    def start(self, w: int, t: float) -> None:
        """An idle worker asks for work: start a job, or wait for a release."""
        if w in self.lost:
            return
        v = self.request(w)
        if v is None:
            return
        token = self.token[w] + 1
        self.token[w] = token
        s = self.next_slot[w]
        self.next_slot[w] = s + 1
        self.read[w], self.began[w], self.slot[w], self.busy[w] = v, t, s, True
        self.handle[w] = self.launch(w, token, s, t)

    def current(self, w: int, token: int) -> bool:
        """Whether a result for ``token`` belongs to the worker's running job."""
        return self.busy[w] and self.token[w] == token

    def _end(self, w: int) -> None:
        self.busy[w] = False
        if self.finish is not None:
            self.finish(self.handle[w])
        self.handle[w] = None

    def arrive(self, w: int, t: float, *extra: Any) -> Decision:
        """The worker's running job delivered its gradient at ``t``: its fate, the decision
        carried out, and the worker's next job started."""
        self._end(w)
        read = self.read[w]
        rec = self.rec
        d = self.push(w, read, len(rec.fate), t, *extra)
        fate = PENDING if d.fate == _BUFFERED else FATE_CODE[d.fate]
        rec.gradient(w, self.slot[w], read, self.began[w], t, fate, d.staleness)
        if rec.steps is not None:
            rec.steps.append(self.size[w])
            self.position[w] += self.size[w]
        self.follow(d, t)
        self.start(w, t)
        return d

    def cancel(self, w: int, t: float) -> None:
        """Record the worker's running job, if any, as cancelled at ``t``."""
        if self.busy[w]:
            self._end(w)
            read = self.read[w]
            stale = self.policy.version - read
            self.rec.gradient(w, self.slot[w], read, self.began[w], t, CANCELLED, stale)
            if self.rec.steps is not None:
                self.rec.steps.append(0)  # nothing sent: its steps are undone

    def overrun(self, w: int, t: float) -> None:
        """The worker's running job spent its time budget at ``t`` (MindFlayer): it is
        abandoned, recorded as cancelled "over its time budget", and the worker starts
        again."""
        self.rec.overran.append(len(self.rec.fate))
        self.cancel(w, t)
        self.start(w, t)

    def lose(self, w: int, t: float, *, shrink: bool = True) -> bool:
        """The worker is gone for good at ``t``: its job is cancelled and the policy decides
        what follows (it raises ``WorkerLost`` when it cannot go on). False if it was
        already lost."""
        if w in self.lost:
            return False
        self.lost.add(w)
        self.rec.lost.append((t, w))
        self.cancel(w, t)
        self.follow(self.decide_loss(w, t, shrink=shrink), t)
        return True

    def follow(self, d: Decision, t: float) -> None:
        """Carry out a decision: record its update, cancel and restart the workers it
        cancels, start those it releases."""
        if d.update is not None:
            self.rec.fired(d.update, t)
            if self.on_update is not None:
                self.on_update(d.update, t)
        for c in d.cancel:
            if self.busy[c]:
                if self.on_cancel is not None:
                    self.on_cancel(c, self.token[c])
                self.cancel(c, t)
                self.start(c, t)
        for r in d.release:
            self.start(r, t)
