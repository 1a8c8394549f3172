"""The dashboard on accelerators, on both engines: tables and plots by unit and precision, the per-layer chart
of a measurement, each phone's units on the farm page."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.dashboard import layers, pivot, service
from service.dashboard.pivot import PivotQuery, format_ms
from service.dashboard.service import PlotQuery
from service.devices.models import Device
from service.problems import InvalidInputError, NotFoundError
from tests.service.dashboard.conftest import GPU_KHZ, AcceleratorSeed, seed_accelerator_rows


@pytest.fixture
def accelerated(db_session: Session, seeded) -> AcceleratorSeed:
    """The seeded farm's virtual phone with a GPU and an NPU and measurements on both."""
    return seed_accelerator_rows(db_session, seeded.device_id)


def _login(client: TestClient, make_headers: Callable[..., dict[str, str]]) -> None:
    secret = make_headers("read")["Authorization"].split(" ", 1)[1]
    response = client.post("/dashboard/login", data={"token": secret}, follow_redirects=False)
    assert response.status_code == 303


def test_pivot_picks_a_unit_and_a_precision(
    db_session: Session, seeded, accelerated: AcceleratorSeed
) -> None:
    base = PivotQuery(device=seeded.device_id, family="sr_block", per_page=500)
    cpu = pivot.latency_pivot(db_session, base)
    # The CPU table is what it was: the same 30 configs at the big cluster's clocks, fp32.
    assert (cpu.query.unit, cpu.query.precision, cpu.total) == ("big", "fp32", 30)
    assert cpu.units == ["big", "gpu", "npu"] and cpu.precisions == ["fp32"]

    fp16 = pivot.latency_pivot(db_session, base.model_copy(update={"unit": "gpu", "precision": "fp16"}))
    assert [c.khz for c in fp16.columns] == list(GPU_KHZ)
    assert {r.config_hash for r in fp16.rows} == accelerated.configs[("gpu", "fp16")]
    assert fp16.precisions == ["fp16", "fp32"]
    for row in fp16.rows:
        for column, cell in zip(fp16.columns, row.cells, strict=True):
            assert cell is not None and cell.has_layers and cell.measurement_id in accelerated.layers
            assert cell.median_ms == pytest.approx(
                accelerated.medians[("gpu", "fp16", row.config_hash, column.khz)]
            )
    # Without a precision the GPU table is fp32 (the default), which has one row without layers.
    fp32 = pivot.latency_pivot(db_session, base.model_copy(update={"unit": "gpu"}))
    assert fp32.query.precision == "fp32"
    plain = [c for r in fp32.rows for c in r.cells if c is not None and not c.has_layers]
    assert {c.measurement_id for c in plain} == accelerated.plain_ids and len(plain) == len(GPU_KHZ)
    # fp16 is faster than fp32 on every config and clock.
    by_hash = {r.config_hash: r for r in fp32.rows}
    for row in fp16.rows:
        for half, full in zip(row.cells, by_hash[row.config_hash].cells, strict=True):
            assert half is not None and full is not None and half.median_ms < full.median_ms
    # The NPU has int8 only: that is the default there; `cluster=` (the old name) still selects a unit.
    old_name = {"device": seeded.device_id, "family": "sr_block", "cluster": "npu"}
    npu = pivot.latency_pivot(db_session, PivotQuery.model_validate(old_name))
    assert (npu.query.unit, npu.query.precision, npu.precisions) == ("npu", "int8", ["int8"])
    assert {r.config_hash for r in npu.rows} == accelerated.configs[("npu", "int8")]


def test_unknown_unit_or_precision_is_a_problem_naming_the_field(
    db_session: Session, seeded, accelerated: AcceleratorSeed
) -> None:
    base = PivotQuery(device=seeded.device_id, family="sr_block")
    with pytest.raises(InvalidInputError) as unit:
        pivot.latency_pivot(db_session, base.model_copy(update={"unit": "dsp"}))
    assert unit.value.errors[0]["loc"] == ["query", "unit"] and "big, gpu, npu" in unit.value.detail
    with pytest.raises(InvalidInputError) as precision:
        pivot.latency_pivot(db_session, base.model_copy(update={"unit": "npu", "precision": "fp16"}))
    assert precision.value.errors[0]["loc"] == ["query", "precision"] and "int8" in precision.value.detail


def test_latency_page_filters_by_unit_and_precision_and_links_layers(
    client: TestClient, seeded, accelerated: AcceleratorSeed, make_headers
) -> None:
    _login(client, make_headers)
    page = client.get(
        "/dashboard/latency",
        params={"device": seeded.device_id, "family": "sr_block", "unit": "gpu", "precision": "fp32"},
    )
    assert page.status_code == 200
    html = page.text
    unit_picker = re.search(r'<select id="unit" name="unit">(.*?)</select>', html, re.S)
    assert unit_picker and re.findall(r"<option[^>]*>(\w+)</option>", unit_picker.group(1)) == [
        "big",
        "gpu",
        "npu",
    ]
    assert "<option selected>gpu</option>" in unit_picker.group(1)
    precision_picker = re.search(r'<select id="precision" name="precision">(.*?)</select>', html, re.S)
    assert precision_picker and "<option selected>fp32</option>" in precision_picker.group(1)
    assert len(re.findall(r"<tr data-config-hash=", html)) == len(accelerated.configs[("gpu", "fp32")])
    linked = {int(i) for i in re.findall(r'href="/dashboard/measurements/(\d+)"', html)}
    assert linked and linked <= set(accelerated.layers) and not linked & accelerated.plain_ids
    for plain_id in accelerated.plain_ids:
        assert f'data-measurement-id="{plain_id}"' in html  # shown, not linked
    # The plot links carry the unit and precision, and the CSV is the GPU table.
    assert "unit=gpu&amp;precision=fp32" in html
    export = client.get(
        "/dashboard/latency.csv",
        params={"device": seeded.device_id, "family": "sr_block", "unit": "gpu", "precision": "fp32"},
    )
    assert export.text.splitlines()[0].endswith("315 MHz median ms,840 MHz median ms")
    assert (
        f"latency-sr_block-device{seeded.device_id}-gpu-fp32-page1.csv"
        in export.headers["content-disposition"]
    )
    bad = client.get(
        "/dashboard/latency", params={"device": seeded.device_id, "family": "sr_block", "precision": "int4"}
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "precision"]


def test_layer_chart_page_draws_the_stored_layers_by_unit(
    client: TestClient, db_session: Session, accelerated: AcceleratorSeed, make_headers
) -> None:
    _login(client, make_headers)
    npu_id = next(
        i for i, rows in accelerated.layers.items() if any(layer["unit"] == "cpu" for layer in rows)
    )
    page = client.get(f"/dashboard/measurements/{npu_id}")
    assert page.status_code == 200
    html = page.text
    assert "npu · int8" in html and "nnapi" in html and 'class="badge virtual"' in html
    data = json.loads(
        re.search(r'<script type="application/json" id="layers-data">(.*?)</script>', html).group(1)
    )
    stored = accelerated.layers[npu_id]
    assert data["virtual"] is True and len(data["order"]) == len(stored)
    by_unit = {t["unit"]: t for t in data["traces"]}
    assert set(by_unit) == {"npu", "cpu"}  # the pixel shuffle fell back to the CPU
    assert by_unit["cpu"]["op_types"] == ["DepthToSpace"]
    assert sorted(x for t in data["traces"] for x in t["x"]) == sorted(layer["ms"] for layer in stored)
    rows = re.findall(r"<tr><td class=\"num\">\d+</td><td>([^<]+)</td><td>(\w+)</td><td>(\w+)</td>", html)
    assert rows == [(layer["name"], layer["op_type"], layer["unit"]) for layer in stored]
    assert format_ms(sum(layer["ms"] for layer in stored)) in html

    plain = client.get(f"/dashboard/measurements/{min(accelerated.plain_ids)}")
    assert plain.status_code == 200 and "No per-layer chart" in plain.text and "layers.js" not in plain.text
    assert client.get("/dashboard/measurements/999999").status_code == 404
    with pytest.raises(NotFoundError):
        layers.layer_chart(db_session, 999_999)


def test_plots_follow_the_unit_and_mark_points_with_layers(
    db_session: Session, seeded, accelerated: AcceleratorSeed
) -> None:
    data = service.plot_data(
        db_session, PlotQuery(device=seeded.device_id, family="sr_block", unit="gpu", precision="fp16")
    )
    assert (data["unit"], data["precision"], data["clock_title"]) == ("gpu", "fp16", "GPU clock (MHz)")
    assert data["units"] == ["big", "gpu", "npu"] and data["virtual"]
    assert data["lines"] and all(line["x"] == [315.0, 840.0] for line in data["lines"])
    ids = [i for line in data["lines"] for i in line["measurement_ids"]]
    assert ids and all(i in accelerated.layers for i in ids)
    cpu = service.plot_data(db_session, PlotQuery(device=seeded.device_id, family="sr_block"))
    assert cpu["clock_title"] == "CPU frequency (MHz)"
    assert all(i is None for line in cpu["lines"] for i in line["measurement_ids"])


def test_farm_page_lists_each_phones_units(
    client: TestClient, db_session: Session, seeded, accelerated: AcceleratorSeed, make_headers
) -> None:
    _login(client, make_headers)
    html = client.get("/dashboard/farm").text
    gpu = re.search(r'<li data-unit="gpu" data-kind="gpu">(.*?)</li>', html, re.S)
    assert gpu and "Adreno660v1" in gpu.group(1) and "315–840 MHz" in gpu.group(1)
    assert "fp32, fp16" in gpu.group(1) and "virtual" in gpu.group(1)
    npu = re.search(r'<li data-unit="npu" data-kind="npu">(.*?)</li>', html, re.S)
    assert npu and "1000 MHz" in npu.group(1) and "fp16, int8" in npu.group(1)
    big = re.search(r'<li data-unit="big" data-kind="cpu">(.*?)</li>', html, re.S)
    assert big and "800–2000 MHz" in big.group(1)

    # A malformed probe record is left out (as the device API and job validation leave it out), not a 500.
    device = db_session.get(Device, seeded.device_id)
    assert device is not None
    device.accelerators = [{"name": "gpu", "frequencies_khz": "fast"}]
    db_session.commit()
    units = service.device_units(device)
    assert units and all(u.kind == "cpu" for u in units)
    page = client.get("/dashboard/farm")
    assert page.status_code == 200 and 'data-unit="gpu"' not in page.text
