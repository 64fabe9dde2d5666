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
