"""The parser against real nvidia-smi documents: a table of GPUs, one row per GPU of each
fixture with its core columns read off the document by hand, then one named case per quirk."""

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from gpu_telemetry.collector.parser import GPU_COLUMNS, element_to_json, parse_document
from gpu_telemetry.errors import SourceError
from gpu_telemetry.schema import GPU_FIELDS

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
FIXTURE_NAME = re.compile(r"(?P<card>[a-z0-9]+(?:-[a-z0-9]+)*)-v(?P<schema>\d+)\.xml")


@dataclass(frozen=True)
class Gpu:
    """One GPU of a fixture: the file is `<card>-v<schema>.xml`; `doctype` is the version its
    DOCTYPE names (None: no DOCTYPE line); the rest are columns, named as stored."""

    card: str
    schema: int
    doctype: int | None
    gpus_in_document: int
    driver_version: str | None
    gpu_index: int
    gpu_uuid: str
    pci_bus_id: str
    gpu_name: str
    temp_c: int | None
    power_draw_w: float | None
    power_limit_w: float | None
    fan_pct: int | None
    pstate: str | None
    util_gpu_pct: int | None
    util_mem_pct: int | None
    mem_used_mib: int | None
    mem_total_mib: int | None
    clocks_gr_mhz: int | None
    clocks_sm_mhz: int | None
    clocks_mem_mhz: int | None

    @property
    def fixture(self) -> str:
        return f"{self.card}-v{self.schema}.xml"

    @property
    def columns(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in GPU_COLUMNS}


GPUS = (
    Gpu(card="gtx-1070-ti", schema=10, doctype=10, gpus_in_document=1, driver_version=None,
        gpu_index=0, gpu_uuid="GPU-f9ba66fc-a7f5-94c5-da19-019ef2f9c665",
        pci_bus_id="00000000:01:00.0", gpu_name="GeForce GTX 1070 Ti", temp_c=39,
        power_draw_w=None, power_limit_w=None, fan_pct=100, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=42, mem_total_mib=4096, clocks_gr_mhz=135,
        clocks_sm_mhz=135, clocks_mem_mhz=405),
    Gpu(card="gtx-1660-ti", schema=10, doctype=None, gpus_in_document=1, driver_version="418.43",
        gpu_index=0, gpu_uuid="GPU-304a277d-3545-63b8-3a36-dfde3c992989",
        pci_bus_id="00000000:43:00.0", gpu_name="Graphics Device", temp_c=40,
        power_draw_w=8.93, power_limit_w=130.0, fan_pct=0, pstate="P8", util_gpu_pct=0,
        util_mem_pct=1, mem_used_mib=0, mem_total_mib=5912, clocks_gr_mhz=300,
        clocks_sm_mhz=300, clocks_mem_mhz=405),
    Gpu(card="quadro-p400", schema=10, doctype=None, gpus_in_document=1, driver_version="418.43",
        gpu_index=0, gpu_uuid="GPU-8f750be4-dfbc-23b9-b33f-da729a536494",
        pci_bus_id="00000000:43:00.0", gpu_name="Quadro P400", temp_c=33,
        power_draw_w=None, power_limit_w=None, fan_pct=34, pstate="P8", util_gpu_pct=0,
        util_mem_pct=3, mem_used_mib=0, mem_total_mib=1998, clocks_gr_mhz=139,
        clocks_sm_mhz=139, clocks_mem_mhz=405),
    Gpu(card="gt-1030", schema=11, doctype=11, gpus_in_document=1, driver_version="470.74",
        gpu_index=0, gpu_uuid="GPU-857c6374-f681-cf3a-f99f-9063a87b8ac0",
        pci_bus_id="00000000:2D:00.0", gpu_name="NVIDIA GeForce GT 1030", temp_c=36,
        power_draw_w=None, power_limit_w=30.0, fan_pct=35, pstate="P0", util_gpu_pct=0,
        util_mem_pct=3, mem_used_mib=875, mem_total_mib=1998, clocks_gr_mhz=1265,
        clocks_sm_mhz=1265, clocks_mem_mhz=3003),
    Gpu(card="tesla-p4", schema=11, doctype=11, gpus_in_document=1, driver_version="513.46",
        gpu_index=0, gpu_uuid="GPU-1b1ea7c7-1c4b-ed49-1c72-26c65f2dd207",
        pci_bus_id="00000000:00:0B.0", gpu_name="GRID P4-1Q", temp_c=0,
        power_draw_w=None, power_limit_w=None, fan_pct=None, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=807, mem_total_mib=1024, clocks_gr_mhz=0,
        clocks_sm_mhz=0, clocks_mem_mhz=0),
    Gpu(card="tesla-t4", schema=11, doctype=11, gpus_in_document=1, driver_version="515.105.01",
        gpu_index=0, gpu_uuid="GPU-d37e67a5-91dd-3774-a5cb-99096249601a",
        pci_bus_id="00000000:00:1E.0", gpu_name="Tesla T4", temp_c=40,
        power_draw_w=26.78, power_limit_w=70.0, fan_pct=None, pstate="P0", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=1032, mem_total_mib=15360, clocks_gr_mhz=585,
        clocks_sm_mhz=585, clocks_mem_mhz=5000),
    Gpu(card="a10g", schema=11, doctype=11, gpus_in_document=1, driver_version="515.105.01",
        gpu_index=0, gpu_uuid="GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94",
        pci_bus_id="00000000:00:1E.0", gpu_name="NVIDIA A10G", temp_c=17,
        power_draw_w=25.58, power_limit_w=300.0, fan_pct=0, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=22, mem_total_mib=23028, clocks_gr_mhz=210,
        clocks_sm_mhz=210, clocks_mem_mhz=405),
    Gpu(card="a100-sxm4", schema=12, doctype=12, gpus_in_document=1, driver_version="535.54.03",
        gpu_index=0, gpu_uuid="GPU-513536b6-7d19-9063-b049-1e69664bb298",
        pci_bus_id="00000000:01:00.0", gpu_name="NVIDIA A100-SXM4-80GB", temp_c=27,
        power_draw_w=67.03, power_limit_w=500.0, fan_pct=None, pstate="P0", util_gpu_pct=None,
        util_mem_pct=None, mem_used_mib=50, mem_total_mib=81920, clocks_gr_mhz=1275,
        clocks_sm_mhz=1275, clocks_mem_mhz=1593),
    Gpu(card="rtx-3060", schema=12, doctype=12, gpus_in_document=1, driver_version="570.124.04",
        gpu_index=0, gpu_uuid="GPU-d6889ff6-2523-9142-ca3c-1ca3f396a625",
        pci_bus_id="00000000:2D:00.0", gpu_name="NVIDIA GeForce RTX 3060", temp_c=42,
        power_draw_w=11.63, power_limit_w=170.0, fan_pct=0, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=116, mem_total_mib=12288, clocks_gr_mhz=210,
        clocks_sm_mhz=210, clocks_mem_mhz=405),
    Gpu(card="rtx-3080", schema=12, doctype=12, gpus_in_document=1, driver_version="536.40",
        gpu_index=0, gpu_uuid="GPU-19d6d965-2acc-f646-00f8-4c76979aabb4",
        pci_bus_id="00000000:04:00.0", gpu_name="NVIDIA GeForce RTX 3080", temp_c=31,
        power_draw_w=22.78, power_limit_w=336.0, fan_pct=0, pstate="P8", util_gpu_pct=0,
        util_mem_pct=37, mem_used_mib=1128, mem_total_mib=10240, clocks_gr_mhz=210,
        clocks_sm_mhz=210, clocks_mem_mhz=405),
    Gpu(card="rtx-3080", schema=13, doctype=13, gpus_in_document=1, driver_version="595.58.03",
        gpu_index=0, gpu_uuid="GPU-19d6d965-2acc-f646-00f8-4c76979aabb4",
        pci_bus_id="00000000:0C:00.0", gpu_name="NVIDIA GeForce RTX 3080", temp_c=27,
        power_draw_w=142.33, power_limit_w=320.0, fan_pct=0, pstate="P2", util_gpu_pct=65,
        util_mem_pct=9, mem_used_mib=9184, mem_total_mib=10240, clocks_gr_mhz=1950,
        clocks_sm_mhz=1950, clocks_mem_mhz=9251),
    Gpu(card="dual-2080", schema=13, doctype=13, gpus_in_document=2, driver_version="590.44.01",
        gpu_index=0, gpu_uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
        pci_bus_id="00000000:01:00.0", gpu_name="NVIDIA GeForce RTX 2080", temp_c=15,
        power_draw_w=1.0, power_limit_w=215.0, fan_pct=31, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=1, mem_total_mib=8192, clocks_gr_mhz=300,
        clocks_sm_mhz=300, clocks_mem_mhz=405),
    # The capture was anonymised to one UUID for both cards; the bus id keeps them apart.
    Gpu(card="dual-2080", schema=13, doctype=13, gpus_in_document=2, driver_version="590.44.01",
        gpu_index=1, gpu_uuid="GPU-12345678-aaaa-bbbb-cccc-0123456789ab@00000000:02:00.0",
        pci_bus_id="00000000:02:00.0", gpu_name="NVIDIA GeForce RTX 2080", temp_c=15,
        power_draw_w=1.62, power_limit_w=215.0, fan_pct=32, pstate="P8", util_gpu_pct=0,
        util_mem_pct=0, mem_used_mib=1, mem_total_mib=8192, clocks_gr_mhz=300,
        clocks_sm_mhz=300, clocks_mem_mhz=405),
)


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_is_in_the_table_and_named_card_v_schema():
    names = {path.name for path in FIXTURES.glob("*")} - {"README.md"}
    assert names == {gpu.fixture for gpu in GPUS}
    for name in names:
        assert FIXTURE_NAME.fullmatch(name), name
    for gpu in GPUS:
        assert gpu.doctype in (None, gpu.schema), f"{gpu.fixture} says v{gpu.doctype}"


@pytest.mark.parametrize("expected", GPUS, ids=lambda gpu: f"{gpu.fixture}#{gpu.gpu_index}")
def test_the_document_says_what_the_table_says(expected):
    reading = parse_document(read(expected.fixture))
    assert reading.schema_version == expected.doctype
    assert len(reading.gpus) == expected.gpus_in_document
    assert reading.driver_version == expected.driver_version
    row = reading.gpus[expected.gpu_index].as_dict()
    assert list(row) == [*GPU_COLUMNS, "raw_json"]
    assert {column: row[column] for column in expected.columns} == expected.columns


@pytest.mark.parametrize("expected", [gpu for gpu in GPUS if gpu.doctype is None],
                         ids=lambda gpu: gpu.fixture)
def test_a_fixture_without_doctype_is_named_by_its_drivers_schema(expected):
    # Driver 418 (CUDA 10.1) writes nvsmi_device_v10.dtd; these two captures lost the line.
    assert expected.driver_version.startswith("418.") and expected.schema == 10
    assert b"<!DOCTYPE" not in read(expected.fixture)[:512]


def test_v10_bus_id_comes_from_the_gpu_id_attribute():
    # nvsmi_device_v10 minimal documents have no <pci_bus_id>, only <gpu id="...">.
    assert parse_document(read("gtx-1070-ti-v10.xml")).gpus[0].pci_bus_id == "00000000:01:00.0"


def test_thermal_fields_v13():
    gpu = parse_document(read("rtx-3080-v13.xml")).gpus[0]
    assert (gpu.temp_slowdown_c, gpu.temp_shutdown_c, gpu.temp_max_operating_c,
            gpu.temp_target_c) == (95, 98, 93, 83)
    assert gpu.memory_temp_c is None and gpu.temp_tlimit_c is None
    assert gpu.power_avg_w == 139.62
    assert (gpu.power_limit_default_w, gpu.power_limit_min_w,
            gpu.power_limit_max_w) == (320.0, 100.0, 336.0)
    assert gpu.clocks_video_mhz == 1710 and gpu.clocks_max_sm_mhz == 2100
    assert (gpu.pcie_gen_cur, gpu.pcie_gen_max, gpu.pcie_width_cur) == (4, 4, 16)
    assert (gpu.pcie_tx_kbps, gpu.pcie_rx_kbps) == (1066699, 14742333)
    assert gpu.throttle_hw_thermal is False and gpu.throttle_gpu_idle is False
    assert gpu.throttle_hw_thermal_us == 0 and gpu.throttle_sw_power_cap_us == 0
    assert gpu.driver_version == "595.58.03"
    assert gpu.ecc_enabled is None  # N/A on GeForce


def test_v11_throttle_reasons_and_ecc():
    gpu = parse_document(read("a10g-v11.xml")).gpus[0]
    assert gpu.throttle_gpu_idle is True and gpu.throttle_sw_power_cap is False
    assert gpu.throttle_hw_thermal_us is None  # counters exist from v13 on
    assert gpu.remapped_rows_corr == 0 and gpu.remapped_rows_pending is False
    assert gpu.ecc_volatile_corrected == 0 and gpu.ecc_aggregate_uncorrected == 0
    assert gpu.retired_pages_sbe is None


def test_retired_pages_on_tesla_t4():
    gpu = parse_document(read("tesla-t4-v11.xml")).gpus[0]
    assert (gpu.retired_pages_sbe, gpu.retired_pages_dbe) == (0, 0)
    assert gpu.retired_pages_pending is False
    assert gpu.memory_temp_c is None


def test_all_power_na_is_null_not_zero():
    gpu = parse_document(read("quadro-p400-v10.xml")).gpus[0]
    assert gpu.power_draw_w is None and gpu.power_limit_w is None
    assert gpu.power_avg_w is None


def test_instant_power_preferred_over_average():
    gpu = parse_document(read("rtx-3060-v12.xml")).gpus[0]
    assert gpu.power_draw_w == 11.63 and gpu.power_avg_w == 11.60


def _edit(name: str, old: str, new: str) -> bytes:
    text = read(name).decode()
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize("marker", ["N/A", "[N/A]", "[Not Supported]",
                                    "Requested functionality has been deprecated", ""])
def test_not_reported_markers_are_null(marker):
    doc = _edit("tesla-t4-v11.xml", "<gpu_temp>40 C</gpu_temp>", f"<gpu_temp>{marker}</gpu_temp>")
    assert parse_document(doc).gpus[0].temp_c is None


def test_missing_element_is_null():
    doc = _edit("tesla-t4-v11.xml", "<gpu_temp>40 C</gpu_temp>", "")
    assert parse_document(doc).gpus[0].temp_c is None


def test_out_of_range_number_is_null():
    doc = _edit("tesla-t4-v11.xml", "<gpu_temp>40 C</gpu_temp>",
                "<gpu_temp>4294967295 C</gpu_temp>")
    assert parse_document(doc).gpus[0].temp_c is None


def test_unreadable_gpu_does_not_stop_the_others():
    doc = _edit("dual-2080-v13.xml", "<uuid>GPU-12345678-aaaa-bbbb-cccc-0123456789ab</uuid>",
                "<uuid>N/A</uuid>")
    reading = parse_document(doc)
    assert [g.pci_bus_id for g in reading.gpus] == ["00000000:02:00.0"]
    assert reading.gpus[0].gpu_index == 1
    assert len(reading.problems) == 1 and "GPU 0" in reading.problems[0]


def test_non_utf8_byte_is_replaced_not_fatal():
    doc = read("tesla-t4-v11.xml").replace(b"Tesla T4", b"Tesla T4 \xff")
    assert parse_document(doc).gpus[0].gpu_name == "Tesla T4 \ufffd"


def test_newer_schema_is_read_as_newest_with_a_warning(capsys):
    doc = read("rtx-3080-v13.xml").replace(b"nvsmi_device_v13.dtd", b"nvsmi_device_v14.dtd")
    reading = parse_document(doc)
    assert reading.schema_version == 14 and reading.gpus[0].temp_c == 27
    assert "v14" in capsys.readouterr().err


@pytest.mark.parametrize(("doc", "kind"), [
    (b"", "empty_output"),
    (b"   \n", "empty_output"),
    (b"this is not xml \xff", "malformed_xml"),
    (b"<html><body>oops</body></html>", "malformed_xml"),
    (b'<?xml version="1.0" ?>\n<nvidia_smi_log>\n<driver_version>1</driver_version>\n'
     b"</nvidia_smi_log>", "no_gpus"),
])
def test_unusable_documents_are_classified(doc, kind):
    with pytest.raises(SourceError) as caught:
        parse_document(doc)
    assert caught.value.kind == kind
    assert "\n" not in caught.value.message


def test_truncated_document_is_malformed():
    doc = read("rtx-3080-v13.xml")
    with pytest.raises(SourceError) as caught:
        parse_document(doc[: len(doc) // 2])
    assert caught.value.kind == "malformed_xml"


def test_raw_json_is_the_gpu_element():
    reading = parse_document(read("dual-2080-v13.xml"))
    uuid = reading.gpus[1].gpu_uuid
    raw = element_to_json(reading.elements[uuid])
    assert raw["@id"] == "00000000:02:00.0"
    assert raw["uuid"] == "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
    assert raw["temperature"]["gpu_temp"] == "15 C"
    assert "supported_clocks" not in raw  # static and most of the document: left out
    assert isinstance(raw["clocks_event_reasons"], dict)
    assert raw["processes"] is None or isinstance(raw["processes"], dict)


def test_supported_clocks_are_cut_before_parsing_and_a_torn_list_still_fails():
    doc = read("tesla-t4-v11.xml")
    assert doc.count(b"<supported_clocks>") == 1
    reading = parse_document(doc)
    element = next(iter(reading.elements.values()))
    assert element.find("supported_clocks") is None and element.find("max_clocks") is not None
    torn = doc[: doc.index(b"</supported_clocks>")]
    with pytest.raises(SourceError) as caught:
        parse_document(torn)
    assert caught.value.kind == "malformed_xml"


def test_every_field_of_the_schema_is_read_from_some_fixture():
    # A field added to gpu_telemetry.schema with a wrong path reads None everywhere.
    fixtures = sorted({gpu.fixture for gpu in GPUS})
    rows = [row.as_dict() for name in fixtures for row in parse_document(read(name)).gpus]
    never = [spec.name for spec in GPU_FIELDS if all(row[spec.name] is None for row in rows)]
    # <gpu_temp_tlimit> is in six of these captures, N/A in all of them.
    assert never == ["temp_tlimit_c"]
