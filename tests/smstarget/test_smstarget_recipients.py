"""Registry import: E.164, duplicates, row errors, limits, opt-out, streaming."""

from __future__ import annotations

import io
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms.errors import SmsError
from sms.recipients import (
    Duplicate,
    ImportLimits,
    Recipient,
    RegistryError,
    RegistryLimitError,
    RegistryRowError,
    RowError,
    import_registry,
    iter_registry,
    normalise_opt_out,
    open_registry,
)

HEADER = "phone,name,language,address,lat,lon,district,groups,opt_out\n"


def csv_text(*rows: str, header: str = HEADER) -> io.StringIO:
    return io.StringIO(header + "".join(r + "\n" for r in rows), newline="")


def test_import_normalises_and_parses_every_column() -> None:
    report = import_registry(csv_text(
        "138-0013-8000,张三,zh,莞城街道运河东一路1号,23.045,113.750,莞城街道,三防责任人;楼长,0",
        "+852 9123 4567,Alice Wong,EN,Block A,,,东城街道,,yes",
    ))
    assert report.errors == () and report.merged == ()
    a, b = report.imported
    assert a == Recipient("+8613800138000", "张三", "zh", "莞城街道运河东一路1号", 23.045, 113.75,
                          "莞城街道", frozenset({"三防责任人", "楼长"}), False, 1)
    assert (b.msisdn, b.language, b.lat, b.lon, b.opt_out) == ("+85291234567", "en", None,
                                                                None, True)


def test_bom_and_column_order_and_missing_optional_columns() -> None:
    text = "\ufeffGroups,Phone\n村长,13800138000\n"
    report = import_registry(io.StringIO(text))
    assert report.imported[0].msisdn == "+8613800138000"
    assert report.imported[0].groups == frozenset({"村长"})
    assert report.imported[0].language == "zh"


def test_bom_via_open_registry(tmp_path: object) -> None:
    from pathlib import Path
    path = Path(str(tmp_path)) / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (HEADER + "13800138000,,,,,,,,\n").encode())
    with open_registry(str(path)) as f:
        assert import_registry(f).imported[0].msisdn == "+8613800138000"


def test_duplicates_merge_groups_into_first_row_and_are_reported() -> None:
    report = import_registry(csv_text(
        "13800138000,张三,zh,,,,,三防责任人,0",
        "13900139000,李四,zh,,,,,,0",
        "+86 138 0013 8000,Zhang San,en,,,,,楼长;三防责任人,0",
        "008613800138000,,,,,,,村长,0",
    ))
    assert [r.msisdn for r in report.imported] == ["+8613800138000", "+8613900139000"]
    first = report.imported[0]
    assert first.name == "张三" and first.language == "zh"
    assert first.groups == frozenset({"三防责任人", "楼长", "村长"})
    assert [(d.first_row, d.row) for d in report.merged] == [(1, 3), (1, 4)]


@pytest.mark.parametrize(("row", "column", "fragment"), [
    ("12345,,,,,,,,", "phone", "digits"),
    ("1380013800x,,,,,,,,", "phone", "unexpected character"),
    ("13800138000,,fr,,,,,,", "language", "not zh or en"),
    ("13800138000,,,,91,113,,,", "lat", "outside"),
    ("13800138000,,,,23,181,,,", "lon", "outside"),
    ("13800138000,,,,abc,113,,,", "lat", "not a coordinate"),
    ("13800138000,,,,nan,113,,,", "lat", "outside"),
    ("13800138000,,,,23,,,,", "lon", "both"),
    ("13800138000,,,,,,,,maybe", "opt_out", "yes/no"),
    ("13800138000,a\x07b,,,,,,,", "name", "control character"),
    ("13800138000,,,,,,,,,extra", "", "cells but the header"),
])
def test_row_errors_name_row_column_and_problem(row: str, column: str, fragment: str) -> None:
    report = import_registry(csv_text("13900139000,ok,,,,,,,", row))
    assert len(report.imported) == 1
    (error,) = report.errors
    assert (error.row, error.column) == (2, column)
    assert fragment in error.message
    assert str(error).startswith("row 2")


def test_stop_on_error_raises_with_the_row() -> None:
    with pytest.raises(RegistryRowError) as info:
        import_registry(csv_text("13900139000,,,,,,,,", "bad,,,,,,,,"), stop_on_error=True)
    assert info.value.error.row == 2 and info.value.error.column == "phone"


def test_header_problems() -> None:
    with pytest.raises(RegistryError, match="no 'phone' column"):
        import_registry(io.StringIO("name,lat\nx,1\n"))
    with pytest.raises(RegistryError, match="empty"):
        import_registry(io.StringIO(""))
    with pytest.raises(RegistryError, match="repeats"):
        import_registry(io.StringIO("phone,phone\n1,2\n"))


@pytest.mark.parametrize(("limits", "rows"), [
    (ImportLimits(max_rows=2), 3),
    (ImportLimits(max_chars=200), 10),
    (ImportLimits(max_line_chars=10), 1),
])
def test_limits_stop_the_import(limits: ImportLimits, rows: int) -> None:
    data = csv_text(*(f"1380013{i:04d},,,,,,,," for i in range(rows)))
    with pytest.raises(RegistryLimitError):
        import_registry(data, limits=limits)


def test_field_length_limit_is_a_row_error() -> None:
    report = import_registry(csv_text("13800138000," + "x" * 600 + ",,,,,,,"))
    assert report.errors[0].column == "name" and "longer" in report.errors[0].message


def test_error_list_is_capped() -> None:
    report = import_registry(csv_text(*["bad,,,,,,,,"] * 5),
                             limits=ImportLimits(max_errors_kept=2))
    assert len(report.errors) == 2 and report.errors_dropped == 3


def test_opt_out_list_marks_recipients() -> None:
    opt = normalise_opt_out(["+86 139 0013 9000", ""])
    report = import_registry(csv_text("13800138000,,,,,,,,", "13900139000,,,,,,,,no"),
                             opt_out=opt)
    assert [r.opt_out for r in report.imported] == [False, True]


def test_blank_lines_are_skipped() -> None:
    report = import_registry(csv_text("13800138000,,,,,,,,", "", ",,,,,,,,"))
    assert len(report.imported) == 1 and report.errors == ()


def test_malformed_csv_is_a_registry_error() -> None:
    with pytest.raises(RegistryError, match="malformed CSV"):
        import_registry(csv_text('13800138000,"unterminated,,,,,,,,'))


def test_streaming_keeps_memory_small() -> None:
    """50,000 rows streamed through iter_registry: memory grows with the seen-set only."""
    def lines() -> Iterator[str]:
        yield HEADER
        for i in range(50_000):
            yield f"1380{i:07d},居民{i},zh,地址,23.0,113.7,莞城街道,三防责任人,0\n"

    tracemalloc.start()
    count = 0
    for item in iter_registry(lines()):
        assert isinstance(item, Recipient)
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 50_000
    assert peak < 12 * 1024 * 1024  # about 100 bytes per number seen, not a whole row


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_imports_or_raises_our_error(text: str) -> None:
    try:
        for item in iter_registry(io.StringIO(HEADER + text, newline="")):
            assert isinstance(item, (Recipient, Duplicate, RowError))
    except SmsError:
        pass


def test_a_file_without_newlines_is_not_buffered_whole() -> None:
    class Endless(io.StringIO):
        def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
            assert size is not None and 0 < size <= 64 * 1024 + 1
            return "x" * size

    with pytest.raises(RegistryLimitError, match="line is longer"):
        import_registry(Endless())
