"""`backdrop serve --processes N`: N full server processes on one machine, started, restarted and stopped
together.

Each process has its own event loop, peer connections, pipeline and workers (on the one GPU where there
is one), listens on 127.0.0.1 (ports from `proxy.process_ports`) and hands out session URLs under its own
route, /w/{n}; HAProxy gives the browser one origin: the operator's (`backdrop proxy-config`), or one this
supervisor runs itself (`--proxy haproxy`, e.g. in a container). A process that dies is
started again (its sessions end; the others are untouched). SIGTERM drains every process (each exits
when its sessions have ended or its --drain-timeout passed); a second SIGTERM stops them at once.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .proxy import haproxy_config, process_ports

log = logging.getLogger(__name__)
RESTART_DELAY_S = 1.0
PR_SET_PDEATHSIG = 1  # prctl(2)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor dies, however it dies (Linux), so that no
    process is left serving on its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own signals still reach them
        pass


def default_processes(cuda: bool, cores: int) -> int:
    """One process per 4 cores on a CPU (its event loop plus 3 pipeline workers), one per 2 on CUDA (the
    pipeline runs on the GPU; a process needs a core for RTP, SRTP and codecs and one for the rest)."""
    return max(1, cores // (2 if cuda else 4))


class Supervisor:
    """Runs `processes` copies of `backdrop serve ARGS` with the routing flags of each."""

    def __init__(
        self,
        args: list[str],
        processes: int,
        port: int,
        cores: int | None,
        prefix: str = "",
        proxy: tuple[str, int] | None = None,
    ) -> None:
        self.args = args  # the serve command line as given (flags given again below win)
        self.ports = process_ports(port, processes)
        self.cores = cores  # each process's share of the cores on a CPU; None: each process's own default
        self.prefix = prefix  # this machine's own route (a pod's, behind an Ingress), before each process's
        self.proxy = proxy  # (host, port) of an HAProxy this supervisor runs itself; None: the operator's
        self.children: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False

    def command(self, n: int) -> list[str]:
        http, agent = self.ports[n - 1]
        command = [sys.executable, "-m", "server", *self.args, "--processes", "1", "--proxy", "none"]
        command += ["--host", "127.0.0.1", "--port", str(http), "--agent-port", str(agent)]
        command += ["--route-prefix", f"{self.prefix}/w/{n}"]
        return command + ([] if self.cores is None else ["--cores", str(self.cores)])

    async def _run(self, n: int) -> None:
        """Process n, started again whenever it dies, until the supervisor stops."""
        while not self.stopping:
            child = await asyncio.create_subprocess_exec(*self.command(n), preexec_fn=_die_with_parent)
            self.children[n] = child
            http, _ = self.ports[n - 1]
            print(f"process {n} pid {child.pid} on 127.0.0.1:{http}, sessions under /w/{n}/", flush=True)
            code = await child.wait()
            if self.stopping:
                return
            log.warning("process %d (pid %d) exited with %d; starting it again", n, child.pid, code)
            await asyncio.sleep(RESTART_DELAY_S)

    def signal_all(self, signum: int) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.returncode is None:
                child.send_signal(signum)

    async def run(self) -> int:
        """Until SIGTERM or SIGINT has stopped every process; 0 when all of them exited cleanly."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.signal_all, signum)
        haproxy = None
        with tempfile.TemporaryDirectory() as folder:
            if self.proxy is not None:
                # The proxy outlives the processes' drain: their sessions' requests still go through it.
                config = Path(folder) / "haproxy.cfg"
                config.write_text(haproxy_config(len(self.ports), self.proxy[1], self.proxy[0]))
                haproxy = await asyncio.create_subprocess_exec("haproxy", "-db", "-f", str(config))
                print(f"HAProxy (pid {haproxy.pid}) on {self.proxy[0]}:{self.proxy[1]}", flush=True)
            else:
                print(
                    f"Backdrop: {len(self.ports)} processes; put HAProxy in front (`backdrop proxy-config`)", flush=True
                )
            await asyncio.gather(*(self._run(n) for n in range(1, len(self.ports) + 1)))
            if haproxy is not None and haproxy.returncode is None:
                haproxy.terminate()
                await haproxy.wait()
        codes = [c.returncode for c in self.children.values()]
        return 0 if all(c == 0 for c in codes) else 1


def supervise(supervisor: Supervisor) -> int:
    """Run `supervisor` until its processes have stopped (see `Supervisor.run`); its exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if supervisor.proxy is not None and shutil.which("haproxy") is None:
        raise RuntimeError("--proxy haproxy: haproxy is not installed (Debian: apt-get install haproxy)")
    return asyncio.run(supervisor.run())
