"""Broadcast templates: the shipped file, strict placeholders, control characters, part caps."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sms.encoding import Encoding
from sms.templates import Severity, TemplateError, TemplateSet, TemplateTooLong

SHIPPED = Path(__file__).resolve().parents[2] / "conf" / "sms" / "templates.toml"
ZH = {"sender": "东莞市应急管理局", "area": "莞城街道", "route": "东纵大道",
      "shelter": "东莞中学", "event": "洪水", "time": "18:30", "hotline": "12345"}
EN = {"sender": "Dongguan Emergency Management", "area": "Guancheng",
      "route": "Dongzong Avenue", "shelter": "Dongguan Middle School", "event": "flood"}


def one(zh: str, en: str, extra: str = "") -> str:
    return f'[[template]]\nid = "t"\nseverity = "severe"\n{extra}zh = "{zh}"\nen = "{en}"\n'


def test_shipped_templates_render_in_both_languages_within_their_caps() -> None:
    templates = TemplateSet.load(str(SHIPPED))
    assert set(templates.ids()) >= {"flood_evacuation", "chemical_shelter_in_place",
                                    "typhoon_warning", "all_clear"}
    for tid in templates.ids():
        keys = templates[tid].placeholders
        common = {k: v for k, v in ZH.items() if k in keys}
        english = {k: v for k, v in EN.items() if k in keys}
        rendered = templates.render_all(tid, common, {"en": english})
        assert rendered["zh"].encoding is Encoding.UCS2
        assert rendered["en"].encoding is Encoding.GSM7
        for r in rendered.values():
            assert 1 <= r.parts <= templates[tid].max_parts
            assert "{" not in r.text
    assert templates["flood_evacuation"].severity is Severity.EXTREME


def test_render_fills_values_and_counts_parts() -> None:
    ts = TemplateSet.from_toml(one("{area}居民请撤离至{shelter}", "{area}: go to {shelter} {{now}}"))
    r = ts.render("t", "en", {"area": "Humen", "shelter": "Hall"})
    assert (r.text, r.encoding, r.parts, r.language) == ("Humen: go to Hall {now}",
                                                         Encoding.GSM7, 1, "en")
    assert ts.render("t", "zh", {"area": "虎门", "shelter": "礼堂"}).text == "虎门居民请撤离至礼堂"


@pytest.mark.parametrize(("values", "key", "fragment"), [
    ({"area": "x"}, "shelter", "no value"),
    ({"area": "x", "shelter": "y", "shleter": "z"}, "shleter", "does not use"),
    ({"area": "x\x1b[2J", "shelter": "y"}, "area", "control character"),
    ({"area": "x\ny", "shelter": "y"}, "area", "line breaks"),
    ({"area": "x" * 201, "shelter": "y"}, "area", "longer"),
])
def test_render_errors_name_template_and_key(values: dict[str, str], key: str,
                                            fragment: str) -> None:
    ts = TemplateSet.from_toml(one("{area}{shelter}", "{area}{shelter}"))
    with pytest.raises(TemplateError) as info:
        ts.render("t", "zh", values)
    assert info.value.template_id == "t" and info.value.key == key
    assert fragment in str(info.value) and "template 't'" in str(info.value)


def test_part_cap_is_checked_at_render_time() -> None:
    ts = TemplateSet.from_toml(one("{area}", "{area}", "max_parts = 1\n"))
    assert ts.render("t", "zh", {"area": "中" * 70}).parts == 1
    with pytest.raises(TemplateTooLong, match="needs 2 SMS parts, max_parts is 1") as info:
        ts.render("t", "zh", {"area": "中" * 71})
    assert info.value.key == "zh"


@pytest.mark.parametrize(("doc", "key", "fragment"), [
    (one("{area}{bogus}", "{area}{bogus}"), "bogus", "unknown placeholder"),
    (one("{area}", "{area}{time}"), "time", "same placeholders"),
    (one("{area!r}", "{area}"), "area", "plain"),
    (one("{area:>10}", "{area}"), "area", "plain"),
    (one("{area.x}", "{area}"), "area.x", "plain"),
    (one("{0}", "{area}"), "0", "plain"),
    (one("open { brace", "x"), "zh", "write {{"),
    (one("bell \\u0007", "x"), "zh", "control character"),
    (one("", "x"), "zh", "missing or empty"),
    (one("a", "b", 'severity2 = "x"\n'), "severity2", "unknown key"),
    (one("a", "b", "max_parts = 0\n"), "max_parts", "integer"),
    (one("a", "b", "priority = true\n"), "priority", "integer"),
    ('[[template]]\nid = "bad id"\nzh = "a"\nen = "b"\n', "id", "identifier"),
    ('[[template]]\nid = "t"\nseverity = "awful"\nzh = "a"\nen = "b"\n', "severity", "one of"),
    (one("a", "b") + one("a", "b"), "id", "defined twice"),
])
def test_load_errors_name_template_and_key(doc: str, key: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        TemplateSet.from_toml(doc)
    assert info.value.key == key and fragment in str(info.value)


def test_file_level_errors() -> None:
    with pytest.raises(TemplateError, match="not valid TOML"):
        TemplateSet.from_toml("[[template]\n")
    with pytest.raises(TemplateError, match="no such template"):
        TemplateSet.from_toml("")["nope"]
    with pytest.raises(TemplateError, match="larger than"):
        TemplateSet.from_toml("#" * (1024 * 1024 + 1))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.text(max_size=60))
def test_any_document_loads_or_raises_template_error(header: str, body: str) -> None:
    doc = f'[[template]]\nid = "t"\nseverity = "minor"\nzh = {json.dumps(body)}\n' \
          f'en = {json.dumps(body)}\n' + header
    try:
        ts = TemplateSet.from_toml(doc)
    except TemplateError:
        return
    for tid in ts.ids():
        with contextlib.suppress(TemplateError):
            ts.render_all(tid, dict.fromkeys(ts[tid].placeholders, "x"))
