"""The parser against real nvidia-smi documents: every core column, one named case per quirk."""

from pathlib import Path

import pytest

from gpu_telemetry.collector.parser import FIELDS, GPU_COLUMNS, element_to_json, parse_document
from gpu_telemetry.errors import SourceError

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"

CORE = ("gpu_uuid", "pci_bus_id", "gpu_name", "gpu_index", "temp_c", "power_draw_w",
        "power_limit_w", "fan_pct", "pstate", "util_gpu_pct", "util_mem_pct", "mem_used_mib",
        "mem_total_mib", "clocks_gr_mhz", "clocks_sm_mhz", "clocks_mem_mhz")

# Read off the documents by hand: (file, GPU position) -> core columns in CORE order.
EXPECTED = {
    ("a100-sxm4-v12.xml", 0): ("GPU-513536b6-7d19-9063-b049-1e69664bb298", "00000000:01:00.0",
                               "NVIDIA A100-SXM4-80GB", 0, 27, 67.03, 500.0, None, "P0",
                               None, None, 50, 81920, 1275, 1275, 1593),
    ("a10g.xml", 0): ("GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94", "00000000:00:1E.0",
                      "NVIDIA A10G", 0, 17, 25.58, 300.0, 0, "P8", 0, 0, 22, 23028, 210, 210,
                      405),
    ("dual_2080-v13.xml", 0): ("GPU-12345678-aaaa-bbbb-cccc-0123456789ab", "00000000:01:00.0",
                               "NVIDIA GeForce RTX 2080", 0, 15, 1.0, 215.0, 31, "P8", 0, 0, 1,
                               8192, 300, 300, 405),
    ("gt-1030.xml", 0): ("GPU-857c6374-f681-cf3a-f99f-9063a87b8ac0", "00000000:2D:00.0",
                         "NVIDIA GeForce GT 1030", 0, 36, None, 30.0, 35, "P0", 0, 3, 875, 1998,
                         1265, 1265, 3003),
    ("gtx-1070-ti.xml", 0): ("GPU-f9ba66fc-a7f5-94c5-da19-019ef2f9c665", "00000000:01:00.0",
                             "GeForce GTX 1070 Ti", 0, 39, None, None, 100, "P8", 0, 0, 42, 4096,
                             135, 135, 405),
    ("gtx-1660-ti.xml", 0): ("GPU-304a277d-3545-63b8-3a36-dfde3c992989", "00000000:43:00.0",
                             "Graphics Device", 0, 40, 8.93, 130.0, 0, "P8", 0, 1, 0, 5912, 300,
                             300, 405),
    ("quadro-p400.xml", 0): ("GPU-8f750be4-dfbc-23b9-b33f-da729a536494", "00000000:43:00.0",
                             "Quadro P400", 0, 33, None, None, 34, "P8", 0, 3, 0, 1998, 139, 139,
                             405),
    ("rtx-3060-v12.xml", 0): ("GPU-d6889ff6-2523-9142-ca3c-1ca3f396a625", "00000000:2D:00.0",
                              "NVIDIA GeForce RTX 3060", 0, 42, 11.63, 170.0, 0, "P8", 0, 0, 116,
                              12288, 210, 210, 405),
    ("rtx-3080-v12.xml", 0): ("GPU-19d6d965-2acc-f646-00f8-4c76979aabb4", "00000000:04:00.0",
                              "NVIDIA GeForce RTX 3080", 0, 31, 22.78, 336.0, 0, "P8", 0, 37,
                              1128, 10240, 210, 210, 405),
    ("rtx-3080-v13.xml", 0): ("GPU-19d6d965-2acc-f646-00f8-4c76979aabb4", "00000000:0C:00.0",
                              "NVIDIA GeForce RTX 3080", 0, 27, 142.33, 320.0, 0, "P2", 65, 9,
                              9184, 10240, 1950, 1950, 9251),
    ("tesla-t4.xml", 0): ("GPU-d37e67a5-91dd-3774-a5cb-99096249601a", "00000000:00:1E.0",
                          "Tesla T4", 0, 40, 26.78, 70.0, None, "P0", 0, 0, 1032, 15360, 585,
                          585, 5000),
    ("tesla_p4.xml", 0): ("GPU-1b1ea7c7-1c4b-ed49-1c72-26c65f2dd207", "00000000:00:0B.0",
                          "GRID P4-1Q", 0, 0, None, None, None, "P8", 0, 0, 807, 1024, 0, 0, 0),
}


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_has_expectations():
    names = {path.name for path in FIXTURES.glob("*.xml")}
    assert names == {name for name, _ in EXPECTED}


@pytest.mark.parametrize(("name", "position"), sorted(EXPECTED), ids=lambda v: str(v))
def test_core_columns_match_the_document(name, position):
    reading = parse_document(read(name))
    row = reading.gpus[position]
    assert tuple(row[column] for column in CORE) == EXPECTED[(name, position)]
    assert set(row) == set(GPU_COLUMNS)


def test_two_gpus_in_one_document():
    reading = parse_document(read("dual_2080-v13.xml"))
    assert [g["pci_bus_id"] for g in reading.gpus] == ["00000000:01:00.0", "00000000:02:00.0"]
    assert [g["gpu_index"] for g in reading.gpus] == [0, 1]
    assert reading.gpus[1]["power_draw_w"] == 1.62
    # The capture was anonymised to one UUID for both cards; both readings must survive.
    assert [g["gpu_uuid"] for g in reading.gpus] == [
        "GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
        "GPU-12345678-aaaa-bbbb-cccc-0123456789ab@00000000:02:00.0"]


@pytest.mark.parametrize(("name", "version"), [
    ("gtx-1070-ti.xml", 10), ("tesla-t4.xml", 11), ("a100-sxm4-v12.xml", 12),
    ("rtx-3080-v13.xml", 13), ("gtx-1660-ti.xml", None),
])
def test_schema_version_from_doctype(name, version):
    assert parse_document(read(name)).schema_version == version


def test_v10_bus_id_comes_from_the_gpu_id_attribute():
    # nvsmi_device_v10 minimal documents have no <pci_bus_id>, only <gpu id="...">.
    assert parse_document(read("gtx-1070-ti.xml")).gpus[0]["pci_bus_id"] == "00000000:01:00.0"


def test_thermal_fields_v13():
    gpu = parse_document(read("rtx-3080-v13.xml")).gpus[0]
    assert (gpu["temp_slowdown_c"], gpu["temp_shutdown_c"], gpu["temp_max_operating_c"],
            gpu["temp_target_c"]) == (95, 98, 93, 83)
    assert gpu["memory_temp_c"] is None and gpu["temp_tlimit_c"] is None
    assert gpu["power_avg_w"] == 139.62
    assert (gpu["power_limit_default_w"], gpu["power_limit_min_w"],
            gpu["power_limit_max_w"]) == (320.0, 100.0, 336.0)
    assert gpu["clocks_video_mhz"] == 1710 and gpu["clocks_max_sm_mhz"] == 2100
    assert (gpu["pcie_gen_cur"], gpu["pcie_gen_max"], gpu["pcie_width_cur"]) == (4, 4, 16)
    assert (gpu["pcie_tx_kbps"], gpu["pcie_rx_kbps"]) == (1066699, 14742333)
    assert gpu["throttle_hw_thermal"] is False and gpu["throttle_gpu_idle"] is False
    assert gpu["throttle_hw_thermal_us"] == 0 and gpu["throttle_sw_power_cap_us"] == 0
    assert gpu["driver_version"] == "595.58.03"
    assert gpu["ecc_enabled"] is None  # N/A on GeForce


def test_v11_throttle_reasons_and_ecc():
    gpu = parse_document(read("a10g.xml")).gpus[0]
    assert gpu["throttle_gpu_idle"] is True and gpu["throttle_sw_power_cap"] is False
    assert gpu["throttle_hw_thermal_us"] is None  # counters exist from v13 on
    assert gpu["remapped_rows_corr"] == 0 and gpu["remapped_rows_pending"] is False
    assert gpu["ecc_volatile_corrected"] == 0 and gpu["ecc_aggregate_uncorrected"] == 0
    assert gpu["retired_pages_sbe"] is None


def test_retired_pages_on_tesla_t4():
    gpu = parse_document(read("tesla-t4.xml")).gpus[0]
    assert (gpu["retired_pages_sbe"], gpu["retired_pages_dbe"]) == (0, 0)
    assert gpu["retired_pages_pending"] is False
    assert gpu["memory_temp_c"] is None


def test_all_power_na_is_null_not_zero():
    gpu = parse_document(read("quadro-p400.xml")).gpus[0]
    assert gpu["power_draw_w"] is None and gpu["power_limit_w"] is None
    assert gpu["power_avg_w"] is None


def test_instant_power_preferred_over_average():
    gpu = parse_document(read("rtx-3060-v12.xml")).gpus[0]
    assert gpu["power_draw_w"] == 11.63 and gpu["power_avg_w"] == 11.60


def _edit(name: str, old: str, new: str) -> bytes:
    text = read(name).decode()
    assert old in text
    return text.replace(old, new, 1).encode()


@pytest.mark.parametrize("marker", ["N/A", "[N/A]", "[Not Supported]",
                                    "Requested functionality has been deprecated", ""])
def test_not_reported_markers_are_null(marker):
    doc = _edit("tesla-t4.xml", "<gpu_temp>40 C</gpu_temp>", f"<gpu_temp>{marker}</gpu_temp>")
    assert parse_document(doc).gpus[0]["temp_c"] is None


def test_missing_element_is_null():
    doc = _edit("tesla-t4.xml", "<gpu_temp>40 C</gpu_temp>", "")
    assert parse_document(doc).gpus[0]["temp_c"] is None


def test_out_of_range_number_is_null():
    doc = _edit("tesla-t4.xml", "<gpu_temp>40 C</gpu_temp>", "<gpu_temp>4294967295 C</gpu_temp>")
    assert parse_document(doc).gpus[0]["temp_c"] is None


def test_unreadable_gpu_does_not_stop_the_others():
    doc = _edit("dual_2080-v13.xml", "<uuid>GPU-12345678-aaaa-bbbb-cccc-0123456789ab</uuid>",
                "<uuid>N/A</uuid>")
    reading = parse_document(doc)
    assert [g["pci_bus_id"] for g in reading.gpus] == ["00000000:02:00.0"]
    assert reading.gpus[0]["gpu_index"] == 1
    assert len(reading.problems) == 1 and "GPU 0" in reading.problems[0]


def test_non_utf8_byte_is_replaced_not_fatal():
    doc = read("tesla-t4.xml").replace(b"Tesla T4", b"Tesla T4 \xff")
    assert parse_document(doc).gpus[0]["gpu_name"] == "Tesla T4 \ufffd"


def test_newer_schema_is_read_as_newest_with_a_warning(capsys):
    doc = read("rtx-3080-v13.xml").replace(b"nvsmi_device_v13.dtd", b"nvsmi_device_v14.dtd")
    reading = parse_document(doc)
    assert reading.schema_version == 14 and reading.gpus[0]["temp_c"] == 27
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
    reading = parse_document(read("dual_2080-v13.xml"))
    uuid = reading.gpus[1]["gpu_uuid"]
    raw = element_to_json(reading.elements[uuid])
    assert raw["@id"] == "00000000:02:00.0"
    assert raw["uuid"] == "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
    assert raw["temperature"]["gpu_temp"] == "15 C"
    assert "supported_clocks" not in raw  # static and most of the document: left out
    assert isinstance(raw["clocks_event_reasons"], dict)
    assert raw["processes"] is None or isinstance(raw["processes"], dict)


def test_supported_clocks_are_cut_before_parsing_and_a_torn_list_still_fails():
    doc = read("tesla-t4.xml")
    assert doc.count(b"<supported_clocks>") == 1
    reading = parse_document(doc)
    element = next(iter(reading.elements.values()))
    assert element.find("supported_clocks") is None and element.find("max_clocks") is not None
    torn = doc[: doc.index(b"</supported_clocks>")]
    with pytest.raises(SourceError) as caught:
        parse_document(torn)
    assert caught.value.kind == "malformed_xml"


def test_field_columns_are_unique_and_named_with_units():
    columns = [spec.column for spec in FIELDS]
    assert len(columns) == len(set(columns))
    for spec in FIELDS:
        assert spec.comment, spec.column
