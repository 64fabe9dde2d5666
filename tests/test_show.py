from ssmix.cli import main


def test_show_mix_prints_spans_and_writes_html(model_dir, data_dir, tmp_path, capsys):
    page = tmp_path / "mix.html"
    assert main(["show-mix", "--task", "rte", "--model", model_dir, "--data-dir", str(data_dir), "--n", "3",
                 "--mix-ratio", "0.3", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert out.count("Example ") == 3 and out.count("λ = ") == 3 and "mixed:" in out
    text = page.read_text()
    assert text.count("class='tok replaced'") >= 6            # both segments of 3 pairs lose a span
    assert text.count("class='tok taken'") >= 12               # shown in B and in the mixed text
    assert "rgba(220, 40, 40" in text


def test_show_mix_marks_spans_with_brackets_when_piped(model_dir, data_dir, capsys):
    import re

    assert main(["show-mix", "--task", "rte", "--model", model_dir, "--data-dir", str(data_dir), "--n", "2",
                 "--mix-ratio", "0.3"]) == 0
    out = capsys.readouterr().out                      # captured: not a terminal, so colour is lost
    assert out.count("[[") == out.count("]]") >= 2 * 3 * 2     # 2 examples x 3 lines x 2 segments
    lines = out.splitlines()
    for b_line, mixed_line in zip([x for x in lines if x.startswith("B (label")],
                                  [x for x in lines if x.startswith("mixed:")]):
        spans = lambda text: re.findall(r"\[\[ (.*?) \]\]", text)   # noqa: E731
        assert spans(b_line) == spans(mixed_line)     # what B gives is what the mixed text holds
