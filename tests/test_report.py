"""The HTML report: numbers equal the CSVs, nothing external, markup escaped, deterministic, degrades gracefully."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from robustgsl.errors import InputError
from robustgsl.report import write_report
from robustgsl.report.figures import project_2d

from report_fixtures import CORRUPTIONS, make_evaluation
from schema_checks import evaluation_folder_problems, run_folder_problems

INJECTED = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --- a minimal DOM from the standard library's parser ------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, attrs, parent, [], []

    def text(self) -> str:
        return "".join(part if isinstance(part, str) else part.text() for part in self.parts)

    def iter(self):
        """This node and its descendants in document order (a stack, not nested generators: pages are deep)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list["Node"]:
        return [node for node in self.iter()
                if (tag is None or node.tag == tag) and (cls is None or cls in node.classes())
                and all(node.attrs.get(name.replace("_", "-")) == value for name, value in attrs.items())]


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(node)
        self.current.parts.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        node = Node(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(node)
        self.current.parts.append(node)

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.parts.append(data)


def parse(path: Path) -> Node:
    builder = TreeBuilder()
    builder.feed(path.read_text(encoding="utf-8"))
    builder.close()
    return builder.root


def one(nodes: list[Node]) -> Node:
    assert len(nodes) == 1, f"expected exactly one element, found {len(nodes)}"
    return nodes[0]


# --- expected strings, formatted here independently of the report code --------------------------

def pct(fraction: float) -> str:
    return "—" if pd.isna(fraction) else "%.2f" % (fraction * 100)


def two(value: float) -> str:
    return "—" if pd.isna(value) else "%.2f" % value


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values={"": None}, dtype={"model": str, "head": str})


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, Node]:
    eval_dir = make_evaluation(tmp_path_factory.mktemp("demo"))
    page = write_report(eval_dir)
    return eval_dir, parse(page)


# --- numbers ----------------------------------------------------------------------------------

def test_writes_index_html_beside_the_csvs_and_logs_the_path(tmp_path):
    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    lines = []
    page = write_report(eval_dir, log=lines.append)
    assert page == eval_dir / "index.html" and page.is_file()
    assert len(lines) == 1 and str(page) in lines[0]
    assert not [p for p in eval_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_report_killed_while_writing_leaves_a_temporary_the_next_one_removes(tmp_path):
    from fault_helpers import Child
    from robustgsl.io import is_temporary

    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    child = Child(f"""
from robustgsl.io import atomic_path
import robustgsl.report.render as render
def write_half(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text[:100])
        ready()
render.write_text_atomic = write_half
render.write_report({str(eval_dir)!r})
""", cwd=tmp_path)
    child.wait_ready()
    child.kill()
    assert [p for p in eval_dir.iterdir() if is_temporary(p)] and not (eval_dir / "index.html").exists()
    write_report(eval_dir)
    assert not [p for p in eval_dir.iterdir() if is_temporary(p)] and (eval_dir / "index.html").is_file()


def test_table2_holds_the_numbers_of_summary_csv(demo):
    eval_dir, root = demo
    summary = pd.read_csv(eval_dir / "summary.csv")
    assert len(one(root.find_all("table", cls="t2")).find_all("tr")) == len(summary) + 1
    for row in summary.itertuples():
        key = f"{row.model}/{row.head}"
        for column, fmt in (("clean_error", pct), ("mean_corruption_error", pct), ("mce", two),
                            ("relative_mce", two)):
            cell = one(root.find_all("td", data_key=key, data_column=column))
            assert one(cell.find_all(cls="v")).text() == fmt(getattr(row, column))
            if column != "mean_corruption_error":
                low, high = getattr(row, f"{column}_low"), getattr(row, f"{column}_high")
                assert one(cell.find_all(cls="ci")).text() == f"[{fmt(low)}, {fmt(high)}]"


def test_best_value_per_column_is_highlighted(demo):
    eval_dir, root = demo
    summary = pd.read_csv(eval_dir / "summary.csv")
    for column in ("clean_error", "mean_corruption_error", "mce", "relative_mce"):
        # A relative MCE flagged as unreliable is never the best.
        reliable = summary["relative_mce_reliable"] if column == "relative_mce" else summary[column].notna()
        lowest = summary.loc[reliable, column].min()
        for row, is_reliable in zip(summary.itertuples(), reliable):
            cell = one(root.find_all("td", data_key=f"{row.model}/{row.head}", data_column=column))
            assert ("best" in cell.classes()) == (is_reliable and getattr(row, column) == lowest), (column, row)


def test_averages_over_fewer_corruptions_are_marked_with_a_footnote(tmp_path):
    eval_dir = make_evaluation(tmp_path, flat_baseline=("shot_noise",), embeddings=False, examples=False)
    root = parse(write_report(eval_dir))
    summary = pd.read_csv(eval_dir / "summary.csv")
    n = len(CORRUPTIONS)
    assert (summary["relative_mce_corruptions"] < n).any()  # guards the fixture: something to mark
    for row in summary.itertuples():
        key = f"{row.model}/{row.head}"
        for column, count in (("mce", row.mce_corruptions), ("relative_mce", row.relative_mce_corruptions)):
            cell = one(root.find_all("td", data_key=key, data_column=column))
            assert bool(cell.find_all("sup", cls="mark")) == (count < n), (key, column)
            assert one(cell.find_all(cls="v")).text() == two(getattr(row, column))  # the number is unchanged
    table2 = one(root.find_all("section", id="table2"))
    footnote = one(table2.find_all("p", cls="footnote")).text()
    averaged = int(summary["relative_mce_corruptions"].min())
    assert f"Relative MCE averages {averaged} of the {n} evaluated corruptions" in footnote
    assert "shot noise" in footnote
    # the per-corruption table: the undefined ratio is a dash, explained, and its MCE footer is marked
    per_corruption = one(root.find_all("section", id="per-corruption"))
    cells = per_corruption.find_all("td", data_corruption="shot_noise", data_column="relative_ce")
    assert cells and all(cell.text() == "—" for cell in cells)
    assert "—: undefined" in " ".join(per_corruption.text().split())
    assert len(per_corruption.find_all("tfoot")[0].find_all("sup", cls="mark")) == \
        int((summary["relative_mce_corruptions"] < n).sum() + (summary["mce_corruptions"] < n).sum())
    files = " ".join(one(root.find_all("section", id="files")).text().split())
    assert f"Relative MCE here averages {averaged} of {n} corruptions" in files


def test_full_averages_carry_no_marks(demo):
    eval_dir, root = demo
    summary = pd.read_csv(eval_dir / "summary.csv")
    assert (summary["mce_corruptions"] == len(CORRUPTIONS)).all()
    assert (summary["relative_mce_corruptions"] == len(CORRUPTIONS)).all()
    assert not root.find_all("sup", cls="mark") and not root.find_all("p", cls="footnote")


def test_numbers_that_round_to_zero_show_no_minus_sign():
    from robustgsl.report.tables import number, percent

    assert number(-1e-13) == "0.00" and percent(-1e-15) == "0.00"
    assert number(-0.004) == "0.00" and number(-0.005001) == "-0.01" and percent(-0.5) == "-50.00"


def test_header_and_embedding_caption_say_what_a_reader_needs(demo):
    eval_dir, root = demo
    meta = json.loads((eval_dir / "evaluation.json").read_text())
    header = " ".join(one(root.find_all("header")).text().split())
    assert meta["git_sha"] in header
    created = datetime.fromisoformat(meta["created_at"])
    assert created.strftime("%Y-%m-%d %H:%M:%S") + " UTC" in header  # no ISO "T" in the readable time
    corruption = str(np.load(eval_dir / "embeddings.npz")["embedding_corruption"]).replace("_", " ")
    caption = " ".join(one(root.find_all("section", id="embeddings")).find_all("figcaption")[0].text().split())
    assert f"under {corruption} at severity 5 (the highest evaluated)" in caption


def test_published_figures_are_labelled_as_published(demo):
    _, root = demo
    card = one(root.find_all("aside", cls="published"))
    text = " ".join(card.text().split())
    assert "Published · not measured here" in text
    for value in ("5.06", "5.60", "95.28", "90.33"):
        assert value in text
    assert "1905.00301" in text


def test_every_error_of_errors_csv_is_in_the_heat_tables(demo):
    eval_dir, root = demo
    errors = read(eval_dir / "errors.csv")
    cells = [node for node in root.iter() if "data-severity" in node.attrs and "data-key" in node.attrs]
    assert len(cells) == len(errors)  # each (model, head, corruption, severity) exactly once
    for row in errors.itertuples():
        cell = one(root.find_all(data_key=f"{row.model}/{row.head}", data_corruption=row.corruption,
                                 data_severity=str(row.severity)))
        assert cell.text() == pct(row.error)


def test_per_corruption_table_holds_corruption_summary_csv(demo):
    eval_dir, root = demo
    frame = read(eval_dir / "corruption_summary.csv")
    table = one(root.find_all("table", cls="corr"))
    for row in frame.itertuples():
        for column in ("ce", "relative_ce"):
            cell = one(table.find_all("td", data_key=f"{row.model}/{row.head}", data_corruption=row.corruption,
                                      data_column=column))
            assert cell.text() == two(getattr(row, column))
    # grouped noise / blur / weather / digital, in that order, each corruption once
    groups = [" ".join(node.text().split()) for node in table.find_all("tr", cls="group")]
    assert groups == ["noise", "blur", "weather", "digital"]
    labels = [node.children[0].text() for node in table.find_all("tr") if node.children
              and node.children[0].tag == "th" and "left" in node.children[0].classes()
              and node.parent.tag == "tbody"]
    assert sorted(labels) == sorted(c.replace("_", " ") for c in CORRUPTIONS)


def test_verdicts_follow_the_bootstrap_intervals(demo):
    eval_dir, root = demo
    summary = pd.read_csv(eval_dir / "summary.csv")
    items = root.find_all("ul", cls="verdicts")[0].find_all("li")
    assert len(items) == len(summary) - 1  # one per non-baseline model/head
    for row in summary.iloc[1:].itertuples():
        item = one([li for li in items if li.find_all(cls="vkey")[0].text() == f"{row.model}/{row.head}"])
        badges = [node.text() for node in item.find_all(cls="badge")]
        expected_mce = ("more robust" if row.mce_high < 100 else "less robust" if row.mce_low > 100
                        else "within noise")
        expected_relative = ("unreliable" if not row.relative_mce_reliable else "more robust"
                             if row.relative_mce_high < 100 else "less robust" if row.relative_mce_low > 100
                             else "within noise")
        expected_clean = ("higher clean error" if row.clean_error_diff_low > 0 else
                          "lower clean error" if row.clean_error_diff_high < 0 else "within noise")
        assert badges == [expected_mce, expected_relative, expected_clean]


def test_corruption_grid_and_figures_are_embedded(demo):
    eval_dir, root = demo
    images = root.find_all("img", cls="pixel")
    assert len(images) == 15 * 5 + 1
    examples = np.load(eval_dir / "example_images.npz")
    from PIL import Image
    import io

    decoded = [np.asarray(Image.open(io.BytesIO(base64.b64decode(img.attrs["src"].split(",", 1)[1]))))
               for img in images]
    assert np.array_equal(decoded[0], examples["clean"])
    assert any(np.array_equal(image, examples["corrupted"][0, 4]) for image in decoded)
    assert len(root.find_all("svg", cls="figure")) == 2  # severity curves, training curves
    embed = one(root.find_all("img", cls="embed"))
    assert base64.b64decode(embed.attrs["src"].split(",", 1)[1]).startswith(b"\x89PNG")


def test_nothing_external_and_links_resolve(demo):
    eval_dir, root = demo
    assert not root.find_all("script") and not root.find_all("link") and not root.find_all("iframe")
    page_text = (eval_dir / "index.html").read_text()
    assert "@import" not in page_text
    assert all(target.startswith("#") for target in re.findall(r"url\(\s*['\"]?([^)'\"]*)", page_text))
    local = []
    for node in root.iter():
        for name in ("src", "href", "xlink:href", "srcset", "action", "poster"):
            value = node.attrs.get(name)
            if value is None or value.startswith("data:") or value.startswith("#"):
                continue
            parsed = urlparse(value)
            assert not parsed.scheme and not parsed.netloc, f"external {name}={value!r} on <{node.tag}>"
            local.append(value)
    assert "errors.csv" in local and "summary.csv" in local
    for value in local:
        assert (eval_dir / unquote(value)).exists(), value
    run_links = [v for v in local if v.endswith("runs/demo/ce") or v.endswith("runs/demo/gsl")]
    assert len(run_links) == 2


def test_injected_markup_is_escaped(tmp_path):
    eval_dir = make_evaluation(tmp_path, names={"gsl": f"g$x$ {INJECTED}"})
    page = write_report(eval_dir, title=f"title {INJECTED}")
    text = page.read_text()
    root = parse(page)
    assert not root.find_all("script")
    assert INJECTED not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    # the name is shown (escaped) in the header chips, in Table 2 and in the hyperparameters
    assert any(INJECTED in node.text() for node in root.find_all(cls="chip"))
    assert root.find_all("td", data_key=f"g$x$ {INJECTED}/10nn", data_column="mce")
    assert any(INJECTED in node.text() for node in root.find_all("td", cls="mono"))
    assert INJECTED in one(root.find_all("title")).text()


def test_two_renders_are_byte_identical_even_across_processes(tmp_path):
    eval_dir = make_evaluation(tmp_path)
    first = write_report(eval_dir).read_bytes()
    second = write_report(eval_dir).read_bytes()
    assert first == second
    env = dict(os.environ, PYTHONHASHSEED="12345")
    code = ("import sys; from robustgsl.report import write_report; "
            "write_report(sys.argv[1], out_path=sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, str(eval_dir), str(eval_dir / "again.html")],
                   check=True, env=env, timeout=300)
    assert (eval_dir / "again.html").read_bytes() == first


# --- graceful degradation ----------------------------------------------------------------------

def notes(root: Node) -> str:
    return " ".join(" ".join(node.text().split()) for node in root.find_all(cls="na"))


def test_one_model_without_baseline(tmp_path):
    eval_dir = make_evaluation(tmp_path, models=("gsl",), baseline=False)
    root = parse(write_report(eval_dir))
    summary = pd.read_csv(eval_dir / "summary.csv")
    assert "The comparison with a baseline not available because this evaluation has no baseline" in notes(root)
    for row in summary.itertuples():
        key = f"{row.model}/{row.head}"
        assert one(root.find_all("td", data_key=key, data_column="mce")).find_all(cls="v")[0].text() == "—"
        assert one(root.find_all("td", data_key=key, data_column="clean_error")).find_all(cls="v")[0].text() \
            == pct(row.clean_error)
    assert not root.find_all("ul", cls="verdicts")
    # without CE_c, the per-corruption table shows the mean error over severities
    for row in read(eval_dir / "corruption_summary.csv").itertuples():
        cell = one(root.find_all("td", data_key=f"{row.model}/{row.head}", data_corruption=row.corruption,
                                 data_column="mean_error"))
        assert cell.text() == pct(row.mean_error)


def test_runs_without_metrics_and_missing_npz(tmp_path):
    eval_dir = make_evaluation(tmp_path, metrics=False, embeddings=False, examples=False)
    root = parse(write_report(eval_dir))
    text = notes(root)
    assert "Training curves of ce not available because its run folder has no metrics.jsonl" in text
    assert "Training curves of gsl not available" in text
    assert "The embedding view is not available because embeddings.npz is missing" in text
    assert "The corruption grid not available because example_images.npz is missing" in text
    assert not root.find_all("img")
    assert len(root.find_all("svg", cls="figure")) == 1  # the severity curves remain
    assert root.find_all("td", data_column="mce")  # the tables remain


def test_missing_run_folders_fall_back_to_the_configs_in_evaluation_json(tmp_path):
    eval_dir = make_evaluation(tmp_path, run_folders=False)
    root = parse(write_report(eval_dir))
    files = " ".join(root.find_all("section", id="files")[0].text().split())
    assert "not available because its run folder" in files and "was not found" in files
    hyper = [node.text() for node in root.find_all("td", cls="mono")]
    assert "0.05" in hyper  # gsl's learning rate, from evaluation.json's config


def test_truncated_metrics_line_is_skipped(tmp_path):
    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    metrics = tmp_path / "runs" / "demo" / "gsl" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"epoch": 13, "lo')
    root = parse(write_report(eval_dir))
    assert "line 13 of metrics.jsonl is not valid JSON" in notes(root)
    assert len(root.find_all("svg", cls="figure")) == 2


def test_without_evaluation_json_or_summary(tmp_path):
    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    (eval_dir / "evaluation.json").unlink()
    (eval_dir / "summary.csv").unlink()
    root = parse(write_report(eval_dir))
    text = notes(root)
    assert "Partial header because evaluation.json is missing" in text
    assert "Table 2 not available because summary.csv is missing" in text
    errors = read(eval_dir / "errors.csv")
    assert len([node for node in root.iter() if "data-severity" in node.attrs and "data-key" in node.attrs]) \
        == len(errors)


# --- bad input ---------------------------------------------------------------------------------

def test_bad_folders_and_files_raise_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="neither summary.csv nor errors.csv"):
        write_report(tmp_path / "empty")
    eval_dir = make_evaluation(tmp_path / "a", embeddings=False, examples=False)
    errors = pd.read_csv(eval_dir / "errors.csv")
    errors.drop(columns=["severity"]).to_csv(eval_dir / "errors.csv", index=False)
    with pytest.raises(InputError, match="severity"):
        write_report(eval_dir)
    errors.assign(error="lots").to_csv(eval_dir / "errors.csv", index=False)
    with pytest.raises(InputError, match="'error'"):
        write_report(eval_dir)
    assert not (eval_dir / "index.html").exists()
    errors.to_csv(eval_dir / "errors.csv", index=False)
    (eval_dir / "evaluation.json").write_text("{not json")
    with pytest.raises(InputError, match="evaluation.json"):
        write_report(eval_dir)


def test_a_failed_render_keeps_the_previous_report(tmp_path):
    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    before = write_report(eval_dir).read_bytes()
    (eval_dir / "summary.csv").write_text("model,head\nce,argmax\n")
    with pytest.raises(InputError, match="clean_error"):
        write_report(eval_dir)
    assert (eval_dir / "index.html").read_bytes() == before


# --- the 2-D view ---------------------------------------------------------------------------------

def test_projection_matches_scikit_learn_pca_up_to_sign():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    clean = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    corrupted = clean + rng.normal(size=clean.shape)
    clean_2d, corrupted_2d, _ = project_2d(clean, corrupted)
    pca = PCA(n_components=2).fit(clean)
    for mine, theirs in ((clean_2d, pca.transform(clean)), (corrupted_2d, pca.transform(corrupted))):
        for axis in range(2):
            sign = np.sign(mine[:, axis] @ theirs[:, axis])
            np.testing.assert_allclose(mine[:, axis], sign * theirs[:, axis], atol=1e-8)
    two_d = rng.normal(size=(50, 2))
    same, _, how = project_2d(two_d, two_d)
    np.testing.assert_array_equal(same, two_d)
    assert how == "embedding axes"


def test_fixture_follows_the_schema(tmp_path):
    # Guards the fixture itself: a report test is only as good as the files it reads.
    eval_dir = make_evaluation(tmp_path)
    assert evaluation_folder_problems(eval_dir) == []
    for model in ("ce", "gsl"):
        assert run_folder_problems(tmp_path / "runs" / "demo" / model) == []
    without_baseline = make_evaluation(tmp_path / "b", models=("gsl",), baseline=False)
    assert evaluation_folder_problems(without_baseline) == []
    summary = pd.read_csv(eval_dir / "summary.csv")
    spread = lambda name: [f"{name}_std", f"{name}_min", f"{name}_max"]  # noqa: E731
    assert list(summary.columns) == [
        "model", "head", "baseline", "n_seeds", "seeds", "clean_error", *spread("clean_error"), "clean_error_low",
        "clean_error_high", "mean_corruption_error", *spread("mean_corruption_error"), "mce", *spread("mce"),
        "mce_low", "mce_high", "relative_mce", *spread("relative_mce"), "relative_mce_low", "relative_mce_high",
        "relative_mce_reliable", "relative_mce_reliability", "clean_error_diff_low", "clean_error_diff_high",
        "mce_corruptions", "relative_mce_corruptions", "n_test"]
    assert list(pd.read_csv(eval_dir / "errors.csv").columns) == ["model", "head", "seed", "corruption", "severity",
                                                                  "error"]
    wide = pd.read_csv(eval_dir / "robustbench.csv", header=[0, 1], index_col=0)
    assert wide.shape == (5, 75)  # 15 corruptions x 5 severities, no clean column (RobustBench's layout)
    assert tuple(wide.columns[0]) == ("shot_noise", "1") and tuple(wide.columns[-1]) == ("elastic_transform", "5")
    meta = json.loads((eval_dir / "evaluation.json").read_text())
    assert meta["baseline"] == "ce/argmax" and len(meta["models"]) == 2


def test_schema_checks_catch_drift(tmp_path):
    # The checks above must be able to fail: the drift this fixture once had is caught.
    eval_dir = make_evaluation(tmp_path)
    run_dir = tmp_path / "runs" / "demo" / "gsl"
    environment = json.loads((run_dir / "environment.json").read_text())
    environment.update(environment.pop("versions"))  # flat python / torch instead of nested versions
    (run_dir / "environment.json").write_text(json.dumps(environment))
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | {"flip": True}))  # a field TrainConfig lacks
    problems = " ".join(run_folder_problems(run_dir))
    assert "versions is NoneType" in problems and "unexpected ['flip']" in problems
    wide = pd.read_csv(eval_dir / "robustbench.csv", header=[0, 1], index_col=0)
    wide.insert(0, ("clean", "0"), 0.9)  # the clean column robustbench.csv once had
    wide.to_csv(eval_dir / "robustbench.csv")
    meta = json.loads((eval_dir / "evaluation.json").read_text())
    (eval_dir / "evaluation.json").write_text(json.dumps(meta | {"versions": {"python": "3.11"}}))
    problems = " ".join(evaluation_folder_problems(eval_dir))
    assert "robustbench.csv columns: missing [], unexpected [('clean', '0')]" in problems
    assert "evaluation.json versions: missing ['numpy', 'robustgsl', 'sklearn', 'torch']" in problems


def _key_value_table(root: Node, filename: str) -> Node:
    return one([t for t in root.find_all("table", cls="kv") if filename in t.parent.text()])


def _rows(table: Node) -> dict[str, list[str]]:
    return {row.children[0].text(): [cell.text() for cell in row.children[1:]] for row in table.find_all("tr")
            if row.children and row.children[0].tag == "th" and row.parent.tag == "tbody"}


def test_environment_versions_are_rows_not_a_json_blob(demo):
    eval_dir, root = demo
    environment = json.loads((eval_dir.parent.parent / "runs/demo/ce/environment.json").read_text())
    rows = _rows(_key_value_table(root, "environment.json"))
    assert "versions" not in rows
    for package, version in environment["versions"].items():
        assert rows[package][0] == version
    assert rows["command_line"][0] == " ".join(environment["command_line"])


def test_hyperparameter_rows_carry_the_option_help(demo):
    from robustgsl.config import TRAIN_OPTIONS

    eval_dir, root = demo
    configs = [json.loads((eval_dir.parent.parent / f"runs/demo/{m}/config.json").read_text()) for m in ("ce", "gsl")]
    titles = {node.text(): node.attrs.get("title")
              for node in _key_value_table(root, "config.json").find_all("th", cls="mono")}
    for spec in TRAIN_OPTIONS:
        if any(spec.applies_to(config) for config in configs):  # the table lists the fields some run uses
            assert titles[spec.name] == spec.help
    assert "classes" in titles["num_classes"]


def test_embedding_caption_names_the_highest_evaluated_severity(tmp_path):
    eval_dir = make_evaluation(tmp_path, severities=(1, 2, 3), examples=False)
    root = parse(write_report(eval_dir))
    caption = " ".join(one(root.find_all("section", id="embeddings")).find_all("figcaption")[0].text().split())
    assert "at severity 3 (the highest evaluated)" in caption


# --- reliability, seeds, the paper's figures, readability ------------------------------------------

def test_a_flagged_relative_mce_is_greyed_and_never_highlighted(tmp_path):
    eval_dir = make_evaluation(tmp_path, tiny_baseline=("contrast",), embeddings=False, examples=False)
    root = parse(write_report(eval_dir))
    summary = read(eval_dir / "summary.csv")
    flagged = summary[~summary["relative_mce_reliable"].astype(bool)]
    reliable = summary[summary["relative_mce_reliable"].astype(bool)]
    # guards the fixture: the lowest relative MCE is a flagged (negative) one
    assert len(flagged) and summary["relative_mce"].idxmin() in flagged.index
    for row in summary.itertuples():
        cell = one(root.find_all("td", data_key=f"{row.model}/{row.head}", data_column="relative_mce"))
        assert ("unreliable" in cell.classes()) == (not row.relative_mce_reliable)
        # the best of the reliable values, when there are at least two to compare
        assert ("best" in cell.classes()) == (len(reliable) > 1 and row.relative_mce == reliable["relative_mce"].min())
        if not row.relative_mce_reliable:
            assert "contrast" in row.relative_mce_reliability
            assert ("negative" in row.relative_mce_reliability) == (row.relative_mce < 0)
            assert row.relative_mce_reliability in cell.attrs["title"]
    assert not [node for node in root.iter() if {"best", "unreliable"} <= node.classes()]
    note = " ".join(one(root.find_all(cls="unreliable-note")).text().split())
    assert all(f"{row.model}/{row.head}" in note for row in flagged.itertuples())
    # per corruption: the flagged ratio is greyed, with the reason on hover, and explained in the caption
    per_corruption = read(eval_dir / "corruption_summary.csv")
    for row in per_corruption.itertuples():
        cell = one(root.find_all("td", data_key=f"{row.model}/{row.head}", data_corruption=row.corruption,
                                 data_column="relative_ce"))
        assert ("unreliable" in cell.classes()) == (not row.relative_ce_reliable and not pd.isna(row.relative_ce))
    section = " ".join(one(root.find_all("section", id="per-corruption")).text().split())
    assert "Greyed: not reliable, because the baseline's denominator" in section
    verdict = [node for node in root.find_all(cls="vitem") if node.attrs.get("data-column") == "relative_mce"]
    assert sum("unreliable" in node.text() for node in verdict) == len(flagged)


def test_seeds_show_mean_spread_and_every_seed(tmp_path):
    eval_dir = make_evaluation(tmp_path, seeds=(0, 1, 2), embeddings=False, examples=False)
    assert evaluation_folder_problems(eval_dir) == []
    root = parse(write_report(eval_dir))
    summary, per_seed = read(eval_dir / "summary.csv"), read(eval_dir / "seed_summary.csv")
    assert (summary["n_seeds"] == 3).all() and len(per_seed) == 3 * len(summary)
    for row in summary.itertuples():
        key = f"{row.model}/{row.head}"
        seeds = per_seed[(per_seed["model"] == row.model) & (per_seed["head"] == row.head)]
        for column, fmt in (("clean_error", pct), ("mce", two), ("relative_mce", two)):
            cell = one(root.find_all("td", data_key=key, data_column=column))
            values = seeds[column].to_numpy()
            assert getattr(row, column) == pytest.approx(values.mean())
            assert one(cell.find_all(cls="v")).text() == fmt(values.mean())
            assert getattr(row, f"{column}_std") == pytest.approx(np.std(values, ddof=1))
            if column != "mce" or key != "ce/argmax":  # the baseline's MCE is 100 in every seed: std 0
                assert one(cell.find_all(cls="sd")).text() == f"± {fmt(np.std(values, ddof=1))}"
            for seed, value in zip(seeds["seed"], values):
                assert f"seed {seed}: {fmt(value)}" in cell.attrs["title"]
        # paired: each seed's MCE is against the baseline run of the same seed
        assert (seeds["baseline_seed"] == seeds["seed"]).all()
    details = one(root.find_all("details", cls="per-seed"))
    assert len([tr for tr in details.find_all("tr") if tr.parent.tag == "tbody"]) == len(per_seed)
    caption = " ".join(one(root.find_all("section", id="table2")).text().split())
    assert "Mean over 3 training seeds" in caption and "against the baseline's seed N (paired)" in caption
    hyper = _rows(_key_value_table(root, "config.json"))
    assert hyper["seed"] == ["0, 1, 2", "0, 1, 2"]


def test_seed_verdicts_need_both_the_bootstrap_and_every_seed(tmp_path):
    eval_dir = make_evaluation(tmp_path, seeds=(0, 1), embeddings=False, examples=False)
    root = parse(write_report(eval_dir))
    summary, per_seed = read(eval_dir / "summary.csv"), read(eval_dir / "seed_summary.csv")
    items = root.find_all("ul", cls="verdicts")[0].find_all("li")
    kinds = []
    for row in summary.iloc[1:].itertuples():
        item = one([li for li in items if li.find_all(cls="vkey")[0].text() == f"{row.model}/{row.head}"])
        seeds = per_seed[(per_seed["model"] == row.model) & (per_seed["head"] == row.head)]
        mce = one([node for node in item.find_all(cls="vitem") if node.attrs["data-column"] == "mce"])
        boot = "below" if row.mce_high < 100 else "above" if row.mce_low > 100 else None
        every = "below" if seeds["mce"].max() < 100 else "above" if seeds["mce"].min() > 100 else None
        badge = one(mce.find_all(cls="badge")).text()
        expected = ({"below": "more robust", "above": "less robust"}[boot] if boot and boot == every
                    else "within seed spread" if boot else "within noise")
        assert badge == expected, (row, badge)
        kinds.append(expected)
        assert "(mean of 2 seeds)" in mce.text()
    assert "more robust" in kinds  # guards the fixture: GSL is more robust in every seed


def test_published_figures_only_beside_the_same_data_set(tmp_path):
    cifar10 = parse(write_report(make_evaluation(tmp_path / "a", embeddings=False, examples=False)))
    table1 = one(cifar10.find_all("aside", cls="table1"))
    published = {node.attrs["data-key"]: node.attrs["data-published"] for node in table1.find_all("td")
                 if "data-published" in node.attrs}
    # Bontonou et al. 2019, Table 1 (CIFAR-10): CE argmax 5.06, GSL 1-NN 5.63, 10-NN 5.48, RBF SVC 5.50.
    assert published == {"ce/argmax": "5.06", "gsl/1nn": "5.63", "gsl/10nn": "5.48", "gsl/svc": "5.50"}
    assert not cifar10.find_all(cls="dataset-line")
    digits_dir = make_evaluation(tmp_path / "b", dataset="digits", embeddings=False, examples=False)
    digits = parse(write_report(digits_dir))
    assert not digits.find_all("aside")
    line = " ".join(one(digits.find_all("p", cls="dataset-line")).text().split())
    assert "Measured on DIGITS, not CIFAR-10" in line and "not shown" in line
    assert "95.28" not in (digits_dir / "index.html").read_text()
    assert "The paper's claim (GSL more robust than CE) needs its full training" in \
        " ".join(one(digits.find_all("header")).text().split())


def test_table2_published_card_names_the_d_200_setting(demo):
    _, root = demo
    card = " ".join(one(root.find_all("aside", cls="published")).text().split())
    assert "d = 200" in card and "this report's has d = 2" in card and "paper-table2" in card


def test_difference_heat_maps_subtract_errors_cell_by_cell(demo):
    eval_dir, root = demo
    errors = read(eval_dir / "errors.csv").set_index(["model", "head", "corruption", "severity"])["error"]
    pairs = {node.attrs["data-diff"] for node in root.iter() if "data-diff" in node.attrs}
    assert pairs == {"gsl/10nn - ce/10nn", "gsl/10nn - ce/argmax"}
    for node in [n for n in root.iter() if "data-diff" in n.attrs]:
        gsl, ce = node.attrs["data-diff"].split(" - ")
        corruption, severity = node.attrs["data-corruption"], int(node.attrs["data-severity"])
        expected = errors[(*gsl.split("/"), corruption, severity)] - errors[(*ce.split("/"), corruption, severity)]
        assert float(node.text()) == pytest.approx(100 * expected, abs=0.051)


def test_severity_figure_caption_and_bands_follow_the_evaluation(tmp_path):
    eval_dir = make_evaluation(tmp_path, severities=(1, 2, 3), embeddings=False, examples=False)
    root = parse(write_report(eval_dir))
    figure = one(root.find_all("section", id="severity"))
    caption = " ".join(one(figure.find_all("figcaption")).text().split())
    assert "to severity 3" in caption and "severity 5" not in caption
    curves = read(eval_dir / "severity_curves.csv")
    errors = read(eval_dir / "errors.csv")
    overall = curves[(curves["family"] == "all") & (curves["severity"] == 2)].set_index(["model", "head"])
    at_two = errors[errors["severity"] == 2].groupby(["model", "head"])["error"].mean()
    for key, value in at_two.items():
        assert overall.loc[key, "error"] == pytest.approx(value)
        assert overall.loc[key, "error_low"] < value < overall.loc[key, "error_high"]
    assert len(figure.find_all("svg", cls="figure")) == 1


def test_hyperparameters_list_only_the_fields_that_apply(tmp_path):
    root = parse(write_report(make_evaluation(tmp_path / "a", optimizer="adam", embeddings=False, examples=False)))
    rows = _rows(_key_value_table(root, "config.json"))
    assert "momentum" not in rows and "nesterov" not in rows  # Adam
    assert rows["k"][0] == "n/a" and rows["normalization"][0] == "n/a" and rows["bottleneck"][1] == "n/a"
    assert "graph" not in rows and "sync_batchnorm" not in rows and "monitor_size" not in rows  # one process, val
    ce_only = parse(write_report(make_evaluation(tmp_path / "b", models=("ce",), embeddings=False, examples=False)))
    rows = _rows(_key_value_table(ce_only, "config.json"))
    assert not {"k", "alpha", "gsl_reduction", "embedding_dim", "normalization", "val_reference_size"} & set(rows)
    assert rows["momentum"] == ["0.9"]  # SGD
    labels = [" ".join(th.text().split()) for th in ce_only.find_all("th") if th.parent.parent.tag == "tfoot"]
    assert labels == ["MCE"]  # no file names in row labels


def test_figure1_draws_the_snapshots_copied_into_the_evaluation(tmp_path):
    eval_dir = make_evaluation(tmp_path, snapshots=True, examples=False)
    assert evaluation_folder_problems(eval_dir) == []
    root = parse(write_report(eval_dir))
    section = one(root.find_all("section", id="figure1"))
    image = one(section.find_all("img"))
    assert base64.b64decode(image.attrs["src"].split(",", 1)[1]).startswith(b"\x89PNG")
    caption = " ".join(one(section.find_all("figcaption")).text().split())
    assert "400 training images" in caption and "epochs 1, 4, 12" in caption and "PCA" not in caption
    # the copies suffice: without the run folders the figure is the same
    import shutil

    shutil.rmtree(tmp_path / "runs")
    again = parse(write_report(eval_dir))
    assert one(one(again.find_all("section", id="figure1")).find_all("img")).attrs["src"] == image.attrs["src"]


def test_figure1_says_how_to_get_it_when_no_run_saved_snapshots(demo):
    _, root = demo
    text = " ".join(one(root.find_all("section", id="figure1")).text().split())
    assert "Figure 1 not available because no run of this evaluation saved embedding snapshots" in text
    assert "--bottleneck 2" in text


def test_how_each_recipe_differs_from_the_papers_is_a_row_of_the_hyperparameters(tmp_path):
    folder = make_evaluation(tmp_path / "a", embeddings=False, examples=False)
    rows = _rows(_key_value_table(parse(write_report(folder)), "config.json"))
    ce, gsl = (entry["config"] for entry in json.loads((folder / "evaluation.json").read_text())["models"])
    assert ce["paper_deviations"] and gsl["paper_deviations"]  # the fixture's runs use the demo recipe
    assert rows["paper_deviations"] == ["; ".join(ce["paper_deviations"]), "; ".join(gsl["paper_deviations"])]
    assert "lr: 0.05 (paper: 0.1)" in rows["paper_deviations"][1]
    # An unset option shows what it means (TrainConfig's default text), not null.
    assert rows["compile"] == ["on for CUDA, off on the CPU"] * 2 and rows["bottleneck"][0] == "none"


def test_the_first_screen_says_the_training_scale_and_what_the_papers_claim_needs(tmp_path, demo):
    _, root = demo
    header = " ".join(one(root.find_all("header")).text().split())
    # The fixture's runs: CIFAR-10, the full width, 12 epochs, one seed, trained on the CPU.
    assert ("Reduced scale: CIFAR-10 · width 1 · 12 epochs · 1 seed per model · trained on CPU. The paper's claim "
            "(GSL more robust than CE: MCE 95.28, relative MCE 90.33) needs its full training (CIFAR-10, width 1, "
            "200 epochs)") in header
    eval_dir = make_evaluation(tmp_path, embeddings=False, examples=False)
    for config_path in (tmp_path / "runs" / "demo").glob("*/config.json"):
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps(config | {"epochs": 200}))
    header = " ".join(one(parse(write_report(eval_dir)).find_all("header")).text().split())
    assert "Scale: CIFAR-10 · width 1 · 200 epochs · 1 seed per model · trained on CPU: the paper's training scale." \
        in header and "Reduced scale" not in header
