"""Pieces the per-run measurement scripts (deploy.py, measure.py) share."""
import os
import signal
import subprocess
import time


def drop_caches():
    """A cold node: nothing of the image in the page, dentry or inode caches."""
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def load_average():
    """Other work on the machine skews a run; recording the load flags it."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class Containerd:
    """A private containerd in DIR: its own root (kept as long as DIR is), state and socket, no CRI plugin,
    started before a run's clock so that only pulling and running are measured."""

    def __init__(self, directory):
        self.socket = os.path.join(directory, "containerd.sock")
        config = os.path.join(directory, "containerd.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{directory}/containerd"\nstate = "{directory}/containerd-state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.socket}"\n')
        self.log = open(os.path.join(directory, "containerd.log"), "a")
        self.process = subprocess.Popen(["containerd", "--config", config], stdout=self.log, stderr=self.log)
        for _ in range(100):
            if subprocess.run(["ctr", "-a", self.socket, "version"], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"containerd did not start (see {directory}/containerd.log)")

    def ctr(self, *argv):
        return ["ctr", "-a", self.socket, "-n", "bench", *argv]

    def run_args(self, ref, name, binds, command=()):
        """`ctr run --rm` of REF with host directories bind-mounted: binds is [(host, container)]."""
        mounts = [a for host, inside in binds for a in ("--mount", f"type=bind,src={host},dst={inside},options=rbind:rw")]
        return self.ctr("run", "--rm", *mounts, ref, name, *command)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # Shims outlive containerd by design; a run's container is gone by now, so its shim must go too.
        subprocess.run(["pkill", "-f", f"containerd-shim.*{self.socket}"], capture_output=True)
        self.log.close()
