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


def terminate(process):
    """SIGTERM, as a service manager stops a daemon; SIGKILL if it has not ended 15 s later."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Containerd:
    """A private containerd in DIR: its own root (kept as long as DIR is), state and socket, no CRI plugin,
    started before a run's clock so that only pulling and running are measured. With a SlipwaySnapshotter,
    containerd knows it as the proxy snapshotter "slipway" and pulls and runs go through it."""

    def __init__(self, directory, snapshotter=None):
        self.socket = os.path.join(directory, "containerd.sock")
        self.snapshotter = snapshotter
        config = os.path.join(directory, "containerd.toml")
        with open(config, "w") as f:
            f.write(f'version = 2\nroot = "{directory}/containerd"\nstate = "{directory}/containerd-state"\n'
                    f'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "{self.socket}"\n')
            if snapshotter:
                f.write(f'[proxy_plugins.slipway]\n  type = "snapshot"\n  address = "{snapshotter.socket}"\n')
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

    def pull_args(self, ref, plain_http=True):
        """How this containerd gets an image: `ctr image pull` (fetch everything, unpack into overlayfs), or with
        Slipway's snapshotter `ctr-remote image rpull`, whose labels let the snapshotter mount eStargz layers
        lazily (the kubelet's CRI pull labels them the same way)."""
        plain = ["--plain-http"] if plain_http else []
        if self.snapshotter:
            return ["ctr-remote", "-a", self.socket, "-n", "bench", "image", "rpull", *plain, "--snapshotter", "slipway", ref]
        return self.ctr("image", "pull", *plain, ref)

    def run_args(self, ref, name, binds, command=()):
        """`ctr run --rm` of REF with host directories bind-mounted: binds is [(host, container)]."""
        mounts = [a for host, inside in binds for a in ("--mount", f"type=bind,src={host},dst={inside},options=rbind:rw")]
        snapshotter = ["--snapshotter", "slipway"] if self.snapshotter else []
        return self.ctr("run", "--rm", *snapshotter, *mounts, ref, name, *command)

    def stop(self):
        terminate(self.process)
        # Shims outlive containerd by design; a run's container is gone by now, so its shim must go too.
        subprocess.run(["pkill", "-f", f"containerd-shim.*{self.socket}"], capture_output=True)
        self.log.close()


class SlipwaySnapshotter:
    """`slipway snapshotter` serving DIR/slipway-snapshotter.sock from STORE (snapshots in STORE/snapshotter),
    started before a run's clock like its containerd."""

    def __init__(self, slipway, directory, store, prefetch="all", plain_http=True):
        self.slipway, self.store = slipway, store
        self.socket = os.path.join(directory, "slipway-snapshotter.sock")
        log_path = os.path.join(directory, "snapshotter.log")
        self.log = open(log_path, "w")
        command = [slipway, "snapshotter", "--address", self.socket, "--store", store, "--prefetch", prefetch]
        self.process = subprocess.Popen(command + (["--plain-http"] if plain_http else []), stdout=self.log, stderr=self.log)
        # Serving once it says so (after its start-up cleanup and remounts), not when a socket file exists: a
        # killed one leaves its socket behind.
        for _ in range(1200):
            with open(log_path) as f:
                if "serving on" in f.read():
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"slipway snapshotter did not start (see {log_path})")

    def stop(self):
        terminate(self.process)
        # The lazy layers' mount processes outlive the snapshotter by design (running containers keep their
        # files); a run's containers are gone by now, so its mounts go too. The next start mounts what its
        # snapshots still need again.
        lazy = os.path.join(self.store, "snapshotter", "lazy")
        for name in sorted(os.listdir(lazy)) if os.path.isdir(lazy) else []:
            subprocess.run([self.slipway, "umount", "--store", self.store, os.path.join(lazy, name)], capture_output=True)
        self.log.close()
