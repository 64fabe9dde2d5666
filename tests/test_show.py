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


def test_mix_page_of_a_reference_protocol_run_shows_exactly_the_spans_its_step_made(model_dir, data_dir, tmp_path,
                                                                                   monkeypatch):
    """The page a sweep logs is drawn from what phase 2's first step mixed, under the run's own
    span rules (here `protocol: reference` on a pair task), not recomputed with the defaults."""
    import re

    from ssmix import step
    from ssmix.finetune import finetune
    from ssmix.show import record_mixes, recorded_mix_page
    from tests.helpers import short_config

    made = []
    original = step.plan_mix

    def spy(*args, **kwargs):          # what the step mixed, caught where the step builds it
        plan = original(*args, **kwargs)
        made.append(plan.mix)
        return plan

    monkeypatch.setattr(step, "plan_mix", spy)
    record = {}
    # A cut of 5 tokens ([CLS] 3 [SEP]) so that the tiny pairs are cut: the page shows A as mixed, cut.
    config = short_config(model_dir, data_dir, task="rte", protocol="reference", mix_ratio=0.3,
                          segment_max_tokens=5)
    assert config.nosal_start == "shared" and not config.cap_span_by_b and config.pair_saliency == "per_segment"
    finetune(config, tmp_path, on_mix=lambda *shown: record.update(record_mixes(*shown)))
    first = made[0]                                    # phase 1 mixes nothing: this is phase 2's first step
    n = len(record["lam"])
    assert n == 4 and record["replaced"] == first.replaced[:n].tolist() and record["taken"] == first.taken[:n].tolist()
    assert all(sum(mask) == 1 + 3 + 1 + 3 + 1 for mask in record["mask_a"])      # each text cut to 3 tokens
    assert record["ids_mixed"] == first.batch["input_ids"][:n].tolist()

    page = recorded_mix_page(record, model_dir, "ssmix on rte, protocol reference")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    blocks = page.split("<div class=\"ex\">")[1:]
    assert len(blocks) == n
    for i, block in enumerate(blocks):
        a_line, b_line, mixed_line = re.findall(r"<p><b>(?:A|B|mixed)</b>.*?</p>", block, flags=re.S)
        marked = lambda line, klass: [html_token for cls, html_token in re.findall(  # noqa: E731
            r"<span class='tok ([a-z]*)'[^>]*>([^<]*)</span>", line) if cls == klass]
        keep = [bool(m) for m in record["mask_a"][i]]
        replaced_ids = [t for t, r, k in zip(record["ids_a"][i], first.replaced[i].tolist(), keep) if r and k]
        mixed_ids = [t for t, r, k in zip(first.batch["input_ids"][i].tolist(), first.replaced[i].tolist(), keep)
                     if r and k]
        assert replaced_ids, "every example has a span replaced"
        assert marked(a_line, "replaced") == tokenizer.convert_ids_to_tokens(replaced_ids)
        assert marked(mixed_line, "taken") == tokenizer.convert_ids_to_tokens(mixed_ids)
        assert f"λ = {float(first.lam[i]):.3f}" in block
