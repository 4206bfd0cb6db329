"""The launcher's targets are the builder's render: an added target plans with no code change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from kthybrid_serve.host.host import read_host
from kthybrid_serve.model.model import read_model
from kthybrid_serve.model.weights import read_cpu_weights
from kthybrid_serve.plan.plan import make_plan
from kthybrid_serve.plan.runtime_needs import ImageFacts
from kthybrid_serve.plan.targets import load_target_data, parse_target_data
from kthybrid_serve.settings import default_settings
from kthybrid_serve.validate import check_arch

from builder.matrix import TARGETS_FILE, load_runtime_needs, load_targets, load_versions
from builder.render import LAUNCHER_TARGETS, render_all
from tests.support.launcher_fixtures import GB

SM86_DATA = Path(__file__).parents[1] / "builder" / "data" / "sm86-target.yaml"
RTX3090 = "NVIDIA GeForce RTX 3090,24576MiB,8.6"


def test_the_package_data_is_the_builders_render() -> None:
    data = load_target_data()
    builder = load_targets()
    assert [t.name for t in data.targets] == list(builder)
    for target in data.targets:
        assert target.compute_capabilities == (builder[target.name].compute_capability,)
        assert target.min_driver == builder[target.name].min_driver
    assert set(data.backends) == set(load_runtime_needs().backends)
    assert data.cuda == load_versions().cuda and data.min_cuda_driver == 12080


def test_an_added_target_plans_with_no_code_change(
    tmp_path: Path, make_host: Callable[..., Path], v4_flash: Path
) -> None:
    raw = yaml.safe_load(TARGETS_FILE.read_text())
    raw["targets"]["sm86"] = yaml.safe_load(SM86_DATA.read_text())
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    targets = load_targets(path)
    rendered = render_all(targets, load_versions(), root=tmp_path,
                          needs=load_runtime_needs(path, targets))  # fmt: skip
    text = next(f.text for f in rendered if f.relative == LAUNCHER_TARGETS.as_posix())
    data = parse_target_data(text)
    host = read_host(str(make_host(cores_per_node=16, mem_bytes=512 * GB)), [RTX3090])
    assert check_arch(host, data, {"KTHYBRID_TARGET": "sm86"}).status == "ok"
    model = read_model(str(v4_flash))
    image = ImageFacts("sm86", "/usr/local/cuda/bin/nvcc", frozenset())
    plan = make_plan(host, model, read_cpu_weights(model.path, model), default_settings(),
                     data, {}, image)  # fmt: skip
    assert plan.target == "sm86"
    assert "tilelang (nsa indexer)" in next(
        i.reason for i in plan.items if i.name == "runtime needs"
    )


def test_a_target_naming_an_undeclared_backend_is_refused(tmp_path: Path) -> None:
    from builder.errors import MatrixError

    raw = yaml.safe_load(TARGETS_FILE.read_text())
    raw["targets"]["sm86"] = yaml.safe_load(SM86_DATA.read_text())
    del raw["backends"]["tilelang"]
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    with pytest.raises(MatrixError, match="backend 'tilelang'"):
        load_runtime_needs(path)
