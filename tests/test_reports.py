"""Reports as a person sees them: Markdown that a Markdown parser reads as GitHub tables, CSV that the csv module
reads back to the JSON's numbers, HTML opened in a real headless Chromium (no console errors, every chart there, a
screenshot that is not blank), ``xfbench report`` for each format, ``xfbench sweep``, and a hostile result file that
must not inject script, markup or spreadsheet formulas into any of them.

The real result is the session's ``regression_run`` (four real backends through the CLI).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest

import xfbench
from tests.conftest import REPO, CliRun, run_cli
from xfbench import reports
from xfbench.compare.results.result import Result
from xfbench.compare.stats.quality import time_to_target
from xfbench.reports import csvfile, html, markdown, plots
from xfbench.reports.model import groups

HOSTILE = {
    "task": "<script>alert('task')</script>| **x**",
    "description": "<img src=x onerror=alert(1)> [click](javascript:alert(2))",
    "error": "=HYPERLINK(\"http://example.invalid\",\"x\")",
    "hostname": "<iframe src=javascript:alert(3)>",
    "device": "-2+3 <b>cpu</b>",
}


@pytest.fixture(scope="module")
def result(regression_run: CliRun) -> Result:
    assert regression_run.returncode == 0, regression_run.stderr
    return xfbench.load(str(regression_run.json_path))


def hostile(result: Result) -> Result:
    """The same result with every string a renderer shows replaced by an injection attempt."""
    document = json.loads(result.to_json())
    document["machine"]["hostname"] = HOSTILE["hostname"]
    document["machine"]["cpu"] = HOSTILE["hostname"]
    task = document["cells"][0]["task"]
    document["config"]["task_descriptions"] = {HOSTILE["task"]: HOSTILE["description"]}
    for cell in document["cells"]:
        cell["task"] = HOSTILE["task"]
        cell["device"]["name"] = HOSTILE["device"]
    document["cells"][-1]["status"], document["cells"][-1]["error"] = "error", HOSTILE["error"]
    for comparison in document["comparisons"]:
        comparison["task"] = HOSTILE["task"]
    document["config"]["targets"] = {HOSTILE["task"]: document["config"]["targets"][task]}
    return Result.from_dict(document)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every table a CommonMark + GFM-tables parser finds: rows of cell texts (header first)."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables, row, inside = [], None, False
    for token in tokens:
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close":
            tables[-1].append(row)
        elif token.type in ("th_open", "td_open"):
            inside = True
        elif token.type == "inline" and inside:
            row.append(token.content)  # type: ignore[union-attr]
            inside = False
    return tables


def test_markdown_is_a_github_table_with_the_answer(result: Result):
    text = markdown.render(result)
    (table,) = markdown_tables(text)
    assert len(table) == 1 + len(result.cells)
    assert all(len(row) == len(table[0]) for row in table), table
    assert table[0][:3] == ["backend", "R²", "step time (median ± IQR)"]
    comparison = result.comparisons[0]
    assert f"**{comparison.fastest} is fastest: " in text.replace("\\", "")
    for row in table[1:]:
        cell = result.cell("regression", row[0].replace("\\", ""))
        assert row[1] == f"{cell.metrics['r2']:.4f}"


def test_csv_has_one_row_per_cell_with_the_json_numbers(result: Result):
    rows = list(csv.DictReader(io.StringIO(csvfile.render(result))))
    assert [row["backend"] for row in rows] == [cell.backend for cell in result.cells]
    assert list(rows[0]) == list(csvfile.COLUMNS)
    for row in rows:
        cell = result.cell(row["task"], row["backend"])
        assert float(row["step_ms_median"]) == cell.timing.step_ms.median  # full precision, not the table's 3 digits
        assert float(row["metric_value"]) == cell.metrics["r2"]
        assert row["ratio_reference"] == result.comparisons[0].reference


def test_time_to_accuracy_and_curves(result: Result):
    """Every ok cell has one curve point per epoch; time-to-target is the first epoch at the target, its training
    time that epoch's cumulative time; a target never reached says so."""
    for cell in result.cells:
        assert [point.epoch for point in cell.curve] == list(range(1, 6))
        reached = time_to_target(cell, -1e9)
        assert reached.seconds == cell.curve[0].train_s and reached.epoch == 1
        assert time_to_target(cell, 2.0).seconds is None  # R² never exceeds 1
    text = xfbench.table(result)
    assert "to R² 0.99" in text  # the regression's own target (not reached in 5 epochs)
    assert "not reached (5 epochs)" in text


def test_hostile_result_injects_nothing(result: Result, tmp_path):
    bad = hostile(result)
    page = reports.render(bad, "html")
    for needle in ("<script", "<img", "<iframe", "<b>", "onerror=alert(1)>"):
        assert needle not in page, needle
    assert "&lt;script&gt;" in page and "&lt;iframe" in page
    text = reports.render(bad, "md")
    assert "<script" not in text and "<img" not in text and "<iframe" not in text
    (table,) = markdown_tables(text)
    assert all(len(row) == len(table[0]) for row in table)  # the task's "|" did not add a column
    rows = list(csv.DictReader(io.StringIO(reports.render(bad, "csv"))))
    assert rows[-1]["error"].startswith("'=HYPERLINK(")
    assert all(row["device_name"].startswith("'-2+3") for row in rows)
    for value in (field for row in rows for field in row.values()):
        assert not value.startswith(("=", "+", "@")) and not (value.startswith("-") and not _number(value)), value


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_report_command_each_format(regression_run: CliRun, tmp_path):
    for fmt, name in (("html", "r.html"), ("md", "r.md"), ("csv", "r.csv"), ("text", "r.txt")):
        out = tmp_path / name
        done = run_cli("report", str(regression_run.json_path), "-o", str(out))
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == f"xfbench: {fmt} report written to {out}"
        assert out.read_text(encoding="utf-8") == reports.render(xfbench.load(str(regression_run.json_path)), fmt)
    done = run_cli("report", str(regression_run.json_path), "--format", "md")
    assert done.returncode == 0 and done.stdout.startswith("## xfbench results")
    for args, message in (
        (["--format", "pdf"], "xfbench: error: unknown report format 'pdf'; choose one of: csv, html, md, text"),
        (["-o", str(tmp_path)], f"xfbench: error: the output path {str(tmp_path)!r} is a folder; give a file name "
                                f"inside it, e.g. {os.path.join(str(tmp_path), 'result.json')!r}"),
    ):
        done = run_cli("report", str(regression_run.json_path), *args)
        assert (done.returncode, done.stderr.strip()) == (2, message)
    done = run_cli("report", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and done.stderr.strip() == f"xfbench: error: no result file at {str(tmp_path / 'missing.json')!r}"


def test_groups_mark_the_best(result: Result):
    (group,) = groups(result)
    assert group.best_step == result.comparisons[0].fastest
    assert group.best_value == max(result.cells, key=lambda cell: cell.metrics["r2"]).backend


def test_a_tie_of_every_backend_has_no_best(result: Result):
    """The same accuracy on every backend is no backend's win: nothing bolded, no bar marked best; a tie of two for
    the top marks both."""
    tied = Result.from_dict(result.to_dict())
    for cell in tied.cells:
        cell.metrics["r2"] = 0.9749
    (group,) = groups(tied)
    assert group.best_values == [] and group.best_value is None
    page = html.render(tied)
    rows = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert all('<td class="best">0.9749</td>' not in row for row in rows)
    quality = dict(plots.figures(group))["quality"]
    assert not any("best" in text.get_text() for text in quality.axes[0].texts)
    tied.cells[0].metrics["r2"] = tied.cells[1].metrics["r2"] = 0.98
    (group,) = groups(tied)
    assert group.best_values == [tied.cells[0].backend, tied.cells[1].backend]
    quality = dict(plots.figures(group))["quality"]
    assert sum("best" in text.get_text() for text in quality.axes[0].texts) == 2


# ---------------------------------------------------------------------------------------------- browser
def test_html_in_headless_chromium(result: Result, tmp_path, chromium: str):
    """The report opens in a real browser with no console errors, every chart of the task is an SVG with its
    title, and a screenshot of it is neither empty nor blank."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is in xfbench[test]")
    path = tmp_path / "report.html"
    reports.write(result, str(path), "html")
    problems: list[str] = []
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: problems.append(f"network: {request.url}")
                    if not request.url.startswith(("file:", "data:", "about:")) else None)
            page.goto(path.as_uri())
            kinds = page.eval_on_selector_all("figure.chart", "nodes => nodes.map(n => n.dataset.kind)")
            titles = page.eval_on_selector_all("figure.chart", "nodes => nodes.map(n => n.getAttribute('aria-label'))")
            shown = page.eval_on_selector_all(  # every text of each chart's figure: its title must be there once
                "figure.chart", "nodes => nodes.map(n => [...n.querySelectorAll('text, figcaption')]"
                                ".map(t => t.textContent))")
            svgs = page.eval_on_selector_all("figure.chart svg", "nodes => nodes.map(n => n.getBoundingClientRect().width)")
            text_in_svg = page.eval_on_selector_all("figure.chart svg text", "nodes => nodes.map(n => n.textContent)")
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert kinds == ["step-time", "throughput", "quality", "phases", "curves", "distribution"]
    assert len(svgs) == len(kinds) and all(width > 300 for width in svgs), svgs
    for title, texts, start in zip(titles, shown, ("Step time: ", "Throughput: ", "R² on the test split: ", "Phases: ",
                                                   "Training curves: ", "Step-time distribution: "), strict=True):
        assert title.startswith(start), titles
        assert texts.count(title) == 1, (title, texts)  # drawn once, not repeated in a caption
    assert any("best" in text for text in text_in_svg)  # the best value is marked
    import numpy as np
    from matplotlib import image

    pixels = image.imread(io.BytesIO(shot), format="png")
    assert len(shot) > 50_000 and pixels.shape[0] > 1500 and float(np.std(pixels)) > 0.05


# ----------------------------------------------------------------------------------------------- sweep
def test_sweep_table_plot_and_bad_parameters(fakes, tmp_path):
    env = {**os.environ}
    plot, out = tmp_path / "sweep.svg", tmp_path / "sweep.json"
    command = [sys.executable, "-m", "xfbench", "sweep", "--task", "regression", "--param", "num_samples=200,400,800",
               "--set", "num_features=3", "--backends", "fake-ref", "--epochs", "2", "--rounds", "3", "--processes",
               "1", "--threads", "1", "--plot", str(plot), "--json", str(out), "--html", str(tmp_path / "sweep.html")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("regression (num_features=3): step time and throughput against num_samples")
    assert lines[1].split()[:4] == ["backend", "num_samples=200", "num_samples=400", "num_samples=800"]
    row = next(line for line in lines if line.startswith("fake-ref"))
    assert row.count("samples/s") == 3
    assert plot.read_text().lstrip().startswith(("<?xml", "<svg")) and "num_samples" in plot.read_text()
    saved = xfbench.load(str(out))
    assert saved.config["sweep"]["values"] == [200, 400, 800] and saved.config["sweep"]["fixed"] == {"num_features": 3}
    assert [cell.task for cell in saved.cells] == [f"regression[num_samples={n}]" for n in (200, 400, 800)]
    assert 'data-kind="sweep"' in (tmp_path / "sweep.html").read_text()
    for param, message in (
        ("depth=1,2", "xfbench: error: unknown parameter 'depth' of task 'regression'; choose one of: batch_size, "
                      "epochs, noise, num_features, num_samples"),
        ("num_samples=10,x", "xfbench: error: --param num_samples: 'x' is not an integer (regression's num_samples "
                             "defaults to 2000)"),
        ("num_samples", "xfbench: error: --param 'num_samples' must look like NAME=V1,V2,..., e.g. "
                        "batch_size=32,64,128"),
    ):
        done = run_cli("sweep", "--task", "regression", "--param", param)
        assert (done.returncode, done.stderr.strip()) == (2, message)
    for fixed, message in (
        ("num_samples=100", "xfbench: error: --set num_samples is the parameter the sweep varies (--param "
                            "num_samples=...)"),
        ("width=3", "xfbench: error: unknown parameter 'width' of task 'regression'; choose one of: batch_size, "
                    "epochs, noise, num_features, num_samples"),
        ("noise", "xfbench: error: --set 'noise' must look like NAME=VALUE, e.g. num_sequences=600"),
    ):
        done = run_cli("sweep", "--task", "regression", "--param", "num_samples=100,200", "--set", fixed)
        assert (done.returncode, done.stderr.strip()) == (2, message)
    done = run_cli("sweep", "--task", "transformer", "--param", "seq_len=64,128", "--set", "heads=3")
    assert (done.returncode, done.stderr.strip()) == (2, "xfbench: error: --param seq_len=64: transformer heads (3) "
                                                         "must divide width (128): each head gets width / heads "
                                                         "channels")
    done = run_cli("sweep", "--task", "cnn28", "--param", "image_size=28,32")
    assert done.returncode == 2 and "cnn28 images are 28x28" in done.stderr


def test_notebook_view_and_plots(result: Result):
    html = result._repr_html_()
    assert html.startswith('<div class="xfbench">') and "<table>" in html and " is fastest" in html
    figures = result.plot()
    assert len(figures) == 6
    assert [figure.axes[0].get_title(loc="left").split(":")[0] for figure in result.plot(["step-time", "phases"])] == [
        "Step time", "Phases"]
    with pytest.raises(xfbench.XfbenchError, match="unknown plot kind 'pie'; choose one of: "):
        result.plot("pie")


NOTEBOOK = REPO / "examples" / "compare.ipynb"


@pytest.mark.notebook
@pytest.mark.frameworks
@pytest.mark.processes
def test_example_notebook_executes(tmp_path, monkeypatch):
    """examples/compare.ipynb runs top to bottom in a real kernel (nbclient), so it cannot rot."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    html = [output["data"]["text/html"] for output in outputs if "text/html" in output.get("data", {})]
    assert any(" is fastest" in text for text in html)
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 2
