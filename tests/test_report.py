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

sys.path.insert(0, str(Path(__file__).parent))
from report_fixtures import CORRUPTIONS, make_evaluation  # noqa: E402
from schema_checks import evaluation_folder_problems, run_folder_problems  # noqa: E402

INJECTED = "<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --- a minimal DOM from the standard library's parser ------------------------------------------

class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: "Node | None"):
        self.tag, self.attrs, self.parent, self.children, self.parts = tag, attrs, parent, [], []

    def text(self) -> str:
        return "".join(part if isinstance(part, str) else part.text() for part in self.parts)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

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
        lowest = summary[column].min()
        for row in summary.itertuples():
            cell = one(root.find_all("td", data_key=f"{row.model}/{row.head}", data_column=column))
            assert ("best" in cell.classes()) == (getattr(row, column) == lowest), (column, row)


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
    cells = [node for node in root.iter() if "data-severity" in node.attrs]
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
        expected_clean = ("higher clean error" if row.clean_error_diff_low > 0 else
                          "lower clean error" if row.clean_error_diff_high < 0 else "within noise")
        assert badges == [expected_mce, expected_clean]


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
    assert len([node for node in root.iter() if "data-severity" in node.attrs]) == len(errors)


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
    assert list(summary.columns) == [
        "model", "head", "baseline", "clean_error", "clean_error_low", "clean_error_high",
        "mean_corruption_error", "mce", "mce_low", "mce_high", "relative_mce", "relative_mce_low",
        "relative_mce_high", "clean_error_diff_low", "clean_error_diff_high", "mce_corruptions",
        "relative_mce_corruptions", "n_test"]
    assert list(pd.read_csv(eval_dir / "errors.csv").columns) == ["model", "head", "corruption", "severity", "error"]
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

    _, root = demo
    titles = {node.text(): node.attrs.get("title")
              for node in _key_value_table(root, "config.json").find_all("th", cls="mono")}
    for spec in TRAIN_OPTIONS:
        assert titles[spec.name] == spec.help
    assert "classes" in titles["num_classes"]


def test_embedding_caption_names_the_highest_evaluated_severity(tmp_path):
    eval_dir = make_evaluation(tmp_path, severities=(1, 2, 3), examples=False)
    root = parse(write_report(eval_dir))
    caption = " ".join(one(root.find_all("section", id="embeddings")).find_all("figcaption")[0].text().split())
    assert "at severity 3 (the highest evaluated)" in caption
