"""Ray's fake multi-node provider, with one change: every worker node gets a temp dir of its
own, as a separate machine has its own disk.

Ray's FakeMultiNodeProvider starts each worker node in the head's temp dir (Ray 2.60), so
all nodes share one `runtime_resources/working_dir_files`. A job's driver runs inside its
working dir there, and each node that first runs a task of the job unpacks the working dir
again with overwrite=True (WorkingDirPlugin.create): it deletes the folder under the
running driver, whose os.getcwd() then fails (Tune's ExperimentAnalysis dies with
FileNotFoundError). The autoscaler loads this class by its module path
(`provider: {type: external, module: tests.sweep._fake_provider.OwnTempDirProvider}`), in
the head's monitor process; it imports only Ray.
"""

from __future__ import annotations

import os

import ray._private.node
from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider

MODULE = f"{__name__}.OwnTempDirProvider"


class OwnTempDirProvider(FakeMultiNodeProvider):
    """FakeMultiNodeProvider whose worker node N uses `{provider.temp_dir_root}/wN` (keep
    the root short: Unix socket paths under it must fit in 107 bytes)."""

    def _create_node_with_resources_and_labels(self, node_config, tags, count, resources, labels):
        root = self.provider_config["temp_dir_root"]
        with self.lock:  # reentrant; node launcher threads create nodes one at a time
            temp_dir = os.path.join(root, f"w{self._next_node_id + 1}")
            node_class = ray._private.node.Node

            def own_temp_dir_node(ray_params, *args, **kwargs):
                ray_params.update_if_absent(temp_dir=temp_dir)
                return node_class(ray_params, *args, **kwargs)

            ray._private.node.Node = own_temp_dir_node
            try:
                super()._create_node_with_resources_and_labels(
                    node_config, tags, count, resources, labels
                )
            finally:
                ray._private.node.Node = node_class
