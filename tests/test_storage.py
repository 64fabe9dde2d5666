"""The storage interface and its locks, without a server: a scheme the service cannot write is
refused at load; the lease protocol of object stores, raced on a local disk (exclusive create is
atomic there: O_EXCL); a filesystem whose flock cannot be trusted is refused with the way out."""

import errno
import threading
import time

import pytest

from ssmix.cli import main
from ssmix.sweep import ResultStore, load_sweep, plan_cells
from ssmix.sweep.lease import Lease, LeaseLost
from ssmix.sweep.object_storage import ObjectStorage
from ssmix.sweep.storage import PosixStorage, flock_is_node_local, open_storage
from tests.helpers import sweep_file


@pytest.mark.parametrize("where", ["ftp://host/results", "hdfs://namenode/results", "s3://"])
def test_a_storage_path_the_service_cannot_write_is_refused_at_load(model_dir, data_dir, tmp_path, capsys, where,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = sweep_file(tmp_path, model_dir, data_dir, name="nowhere", storage_path=where)
    assert main(["sweep", "run", "--dry-run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "storage_path:" in err and where in err and len(err.strip().splitlines()) == 2, err
    assert not (tmp_path / "s3:").exists() and not list(tmp_path.glob("ftp*"))     # never a local folder
    plain = sweep_file(tmp_path, model_dir, data_dir, name="plain", storage_path=None)
    monkeypatch.setenv("SSMIX_STORAGE_PATH", where)
    assert main(["sweep", "run", "--dry-run", str(plain)]) == 2
    assert "$SSMIX_STORAGE_PATH" in capsys.readouterr().err


def test_only_one_of_many_takers_gets_a_lease_and_only_one_takes_over_one_that_ran_out(tmp_path):
    storage = open_storage(f"file://{tmp_path}/store")
    assert isinstance(storage, ObjectStorage)
    won: list[Lease] = []
    start = threading.Barrier(8)

    def take(seconds):
        start.wait()
        lease = Lease.acquire(storage, "cells/x/.claim", blocking=False, seconds=seconds)
        if lease is not None:
            won.append(lease)

    def race(seconds):
        threads = [threading.Thread(target=take, args=(seconds,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    race(seconds=1.5)
    assert len(won) == 1 and storage.lock_held("cells/x/.claim")
    first = won.pop()
    first._stop.set()                 # its holder stops renewing (a dead or frozen driver)...
    time.sleep(2.0)                   # ...and its lease runs out
    assert not storage.lock_held("cells/x/.claim")
    race(seconds=30)
    assert len(won) == 1 and won[0].generation == first.generation + 1
    # The frozen holder wakes up and renews: it finds it was taken over, and says so.
    first._stop.clear()
    first.seconds = 0.3
    first._thread = threading.Thread(target=first._renew, daemon=True)
    first._thread.start()
    assert first.lost.wait(timeout=10)
    with pytest.raises(LeaseLost):
        first.check()
    won[0].release()
    assert not storage.lock_held("cells/x/.claim")
    assert storage.children("cells/x/.claim") == [f"{won[0].generation:08d}.lease"]    # older ones cleaned


def test_a_lock_blocks_the_next_holder_until_it_is_released(tmp_path):
    storage = open_storage(f"file://{tmp_path}/store")
    order = []

    def next_holder():
        with storage.lock("search/.log.lock"):
            order.append("acquired")

    with storage.lock("search/.log.lock"):
        waiting = threading.Thread(target=next_holder)
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive()                  # it waits for the lock...
        order.append("released")
    waiting.join(timeout=30)
    assert order == ["released", "acquired"]       # ...and has it once it is released


def test_flock_that_cannot_be_trusted_is_refused_with_the_way_out(tmp_path, monkeypatch):
    mounts = ("/dev/sda1 / ext4 rw,relatime 0 0\n"
              f"10.0.0.1@tcp:/scratch {tmp_path} lustre rw,localflock,lazystatfs 0 0\n")
    assert "localflock" in flock_is_node_local(tmp_path / "sweeps", mounts)
    assert flock_is_node_local(tmp_path / "sweeps", mounts.replace("localflock,", "flock,")) is None
    storage = PosixStorage(tmp_path / "sweeps")
    assert storage.check() is None
    import ssmix.sweep.storage as module

    def refuse(handle, mode):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(module, "locked", _refusing(refuse))
    problem = storage.check()
    assert "refuses flock" in problem and f"file://{(tmp_path / 'sweeps').resolve()}" in problem


def _refusing(flock):
    from contextlib import contextmanager

    @contextmanager
    def locked(path, **kwargs):
        flock(None, None)
        yield

    return locked


def test_a_store_that_ignores_exclusive_create_is_refused_at_the_dry_run_naming_the_key(model_dir, data_dir,
                                                                                        tmp_path, capsys, monkeypatch):
    """file:// (a directory through the lease protocol, the way out of an untrusted flock) holds a
    sweep; a store without conditional writes, which takes If-None-Match: * as a plain write, not."""
    leased = sweep_file(tmp_path, model_dir, data_dir, name="leased", seeds=(0,), storage_path=f"file://{tmp_path}/store")
    assert main(["sweep", "run", "--in-process", str(leased)]) == 0
    assert "1 already done" not in capsys.readouterr().out
    assert main(["sweep", "run", "--in-process", str(leased)]) == 0
    assert "2 cells, 2 already done, 0 to train" in capsys.readouterr().out

    exclusive = ObjectStorage.create

    def overwrite(self, key, data):
        if not exclusive(self, key, data):
            self.write_bytes(key, data)
        return True

    monkeypatch.setattr(ObjectStorage, "create", overwrite)
    path = sweep_file(tmp_path, model_dir, data_dir, name="unsafe", storage_path=f"file://{tmp_path}/store")
    assert main(["sweep", "run", "--dry-run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not honoured" in err and "of the key .ssmix-probe/" in err and len(err.strip().splitlines()) <= 2, err


def test_status_of_many_cells_on_an_object_store_costs_the_same_few_requests_as_of_few(tmp_path, monkeypatch, capsys):
    """`sweep status` reads a store in one listing and one batched read (s3fs reads the batch
    concurrently), not three requests per cell: on S3, 5,000 cells would be 15,000 round trips."""
    from ssmix.sweep.summary import describe_plan
    from tests.helpers import finished_result

    calls = []
    for name in ("read_bytes", "read_many", "listing", "exists", "size", "children"):
        method = getattr(ObjectStorage, name)

        def counted(self, *args, _method=method, _name=name, **kwargs):
            calls.append(_name)
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(ObjectStorage, name, counted)
    requests = {}
    for seeds in (1, 8):
        (tmp_path / str(seeds)).mkdir()
        path = sweep_file(tmp_path / str(seeds), "tiny-model", tmp_path, name=f"s{seeds}", seeds=tuple(range(seeds)),
                          storage_path=f"file://{tmp_path}/{seeds}/store")
        sweep = load_sweep(path)
        store = ResultStore.for_sweep(sweep)
        for cell in plan_cells(sweep):
            store.write_result(cell, finished_result(phase2=cell.kind == "phase2"))
        calls.clear()
        shown = describe_plan(sweep)
        assert shown.count("finished") >= 2 * seeds, shown
        requests[seeds] = sorted(calls)
    assert requests[1] == requests[8] and requests[8].count("read_many") == 1, requests
