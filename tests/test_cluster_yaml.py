"""cluster.yaml: Ray's own preparation and validation pass, and it would boot this project.

No cloud account is reached: Ray's prepare_config/validate_config only merge defaults and
check the schema; the AWS-specific bootstrap (IAM, subnets, images) is never called.
"""

from __future__ import annotations

import copy
import re
import shlex
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import ROOT

CLUSTER_YAML = ROOT / "cluster.yaml"
TORCH = Version("2.13.0")  # the pin of README's set-up commands
TORCH_INDEX = "https://download.pytorch.org/whl/"
# The system Python of each Ubuntu release the AWS Deep Learning Base AMIs are built on
# (python_location in the DLAMI release notes).
UBUNTU_PYTHON = {"20.04": (3, 8), "22.04": (3, 10), "24.04": (3, 12), "26.04": (3, 14)}
CREDENTIAL_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def config(raw) -> dict:
    """cluster.yaml as `ray up` sees it: Ray 2.60's prepare_config (defaults merged, the
    common setup_commands prepended to head/worker_setup_commands), then validate_config
    (the JSON schema), which expects a prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    return prepared


def pip_installs(commands: list[str]) -> list[tuple[list[Requirement], str | None]]:
    """Each `pip install` among `commands`: (its requirements, its --index-url or None)."""
    out = []
    for command in commands:
        words = shlex.split(command)
        if "pip" not in words or "install" not in words:
            continue
        words = words[words.index("install") + 1 :]
        reqs, index, skip = [], None, False
        for i, word in enumerate(words):
            if skip:
                skip = False
            elif word == "--index-url":
                index, skip = words[i + 1], True
            elif not word.startswith("-"):
                reqs.append(Requirement(word))
        out.append((reqs, index))
    return out


def pyproject_dependencies() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {Requirement(d).name.lower(): Requirement(d) for d in data["project"]["dependencies"]}


def node_types(config: dict) -> tuple[dict, list[dict]]:
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    return head, [t for name, t in types.items() if name != config["head_node_type"]]


def test_ray_prepares_and_validates_the_file(config):
    head, workers = node_types(config)
    assert workers, "no worker node type"
    assert config["provider"]["type"] == "aws"


def test_every_top_level_key_is_set_so_no_ray_default_slips_in(raw):
    # Ray merges its defaults.yaml key by key: a missing setup_commands would install a
    # nightly Ray on the nodes
    from ray.autoscaler._private.util import _get_default_config

    missing = set(_get_default_config(raw["provider"])) - set(raw)
    assert not missing, f"cluster.yaml leaves these to Ray's defaults: {sorted(missing)}"


def test_every_node_type_has_an_instance_profile(config):
    for name, node_type in config["available_node_types"].items():
        profile = node_type["node_config"].get("IamInstanceProfile")
        assert profile and (profile.get("Name") or profile.get("Arn")), name
    head, workers = node_types(config)
    # the workers' profile is not the head's (which may launch instances)
    head_profile = head["node_config"]["IamInstanceProfile"]
    assert all(w["node_config"]["IamInstanceProfile"] != head_profile for w in workers)


def test_no_trial_lands_on_the_head(config):
    head, workers = node_types(config)
    assert head["resources"]["CPU"] == 0
    assert head["resources"].get("GPU", 0) == 0
    start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in start
    # (workers' resources are detected from their instance type, or stated with a GPU)
    assert all(w["resources"] == {} or w["resources"].get("GPU", 0) > 0 for w in workers)


@pytest.mark.parametrize(
    ("commands", "index"),
    [("head_setup_commands", r"cpu"), ("worker_setup_commands", r"cu\d{3}")],
)
def test_torch_pinned_from_the_right_index_before_anything_else(config, commands, index):
    installs = pip_installs(config[commands])
    torch = [(i, r, url) for i, (r, url) in enumerate(installs) if r and r[0].name == "torch"]
    assert len(torch) == 1, torch
    position, reqs, url = torch[0]
    assert [str(r) for r in reqs] == [f"torch=={TORCH}"]
    assert url is not None and re.fullmatch(re.escape(TORCH_INDEX) + index, url), url
    assert TORCH in pyproject_dependencies()["torch"].specifier
    # installed first: a `torch>=...` requirement resolved earlier would pull PyPI's build
    earlier = [r.name for reqs, _ in installs[:position] for r in reqs]
    assert "torch" not in earlier, earlier


@pytest.mark.parametrize("commands", ["head_setup_commands", "worker_setup_commands"])
def test_dependencies_are_pyproject_s(config, commands):
    wanted = {name: req for name, req in pyproject_dependencies().items() if name != "torch"}
    installed = {
        r.name.lower(): r
        for reqs, url in pip_installs(config[commands])
        if url is None
        for r in reqs
        if r.name.lower() not in ("pip", "boto3")  # pip itself; the autoscaler's boto3
    }
    assert installed == wanted
    if commands == "head_setup_commands":  # Ray's autoscaler launches workers with it
        assert any(r.name == "boto3" for reqs, _ in pip_installs(config[commands]) for r in reqs)


def test_the_image_has_python_3_11_or_newer(config):
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    # one image: Ray needs the same Python minor version on every node
    assert len(images) == 1, images
    (image,) = images
    assert image.lower() != "latest_dlami"  # Ray 2.60: Ubuntu 18.04, CUDA 11.2, Python 3.7
    if image.startswith("resolve:ssm:"):
        # AWS's public DLAMI parameter names the Ubuntu release
        assert image.startswith("resolve:ssm:/aws/service/deeplearning/ami/x86_64/"), image
        release = re.search(r"ubuntu-(\d\d\.\d\d)", image)
    else:
        # a pinned id says which image it is in a comment on its line
        line = next(ln for ln in CLUSTER_YAML.read_text().splitlines() if image in ln)
        release = re.search(r"\(Ubuntu (\d\d\.\d\d)\)", line)
    assert release, f"cannot tell the Ubuntu release (and so the Python) of {image}"
    assert UBUNTU_PYTHON[release.group(1)] >= (3, 11)
    # and each node checks it at set-up, before installing anything
    guard = "python -c 'import sys; assert sys.version_info >= (3, 11), sys.version'"
    assert guard in config["setup_commands"]


def test_no_credentials_in_the_cluster_config(config):
    assert "aws_credentials" not in config["provider"]  # Ray copies it to the head
    commands = [c for key, value in config.items() if key.endswith("_commands") for c in value]
    text = "\n".join(commands)
    for name in CREDENTIAL_NAMES:
        assert name not in text
