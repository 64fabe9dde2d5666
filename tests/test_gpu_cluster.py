"""GPU placement on a two-node cluster on loopback (its own module: it starts its own Ray)."""

import pytest

from ssmix.cli import main
from tests.test_gpu_scheduling import gpu_sweep, results

pytestmark = pytest.mark.slow  # real Ray, servers or processes: minutes, not seconds


def test_gpu_trials_run_on_the_node_that_has_the_gpus(model_dir, long_data, tmp_path):
    """Two nodes on loopback: the head has no GPU, the second node has two."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0})
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=2)
    try:
        ray.init(address=cluster.address, include_dashboard=False, configure_logging=False, log_to_driver=False)
        path = gpu_sweep(tmp_path, model_dir, long_data, {"cpu": 1, "gpu": 0.5, "cpu_fallback": True},
                         seeds=(0, 1, 2))
        assert main(["sweep", "run", str(path)]) == 0
        finished = list(results(path).values())
        assert len(finished) == 3 and all(finished)
        assert {r["placement"]["node_id"] for r in finished} == {gpu_node.node_id}
    finally:
        ray.shutdown()
        cluster.shutdown()
