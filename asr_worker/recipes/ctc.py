"""Trains a small wav2vec2 CTC recognizer from scratch on synthetic speech and saves it for `from_pretrained`.

The production recipe fine-tunes a pretrained XLS-R backbone with a new CTC head; no hub is
reachable here, so the demo models that make the system work offline are trained from scratch
instead, on espeak-ng speech of real words of the language (Babel's CLDR data). To learn in a few
CPU minutes, sentences are drawn from a restricted vocabulary of `vocab_words` words: the model
then learns those words' spellings from many voices rather than the whole language. The output
is an ordinary `save_pretrained` directory (safetensors weights, tokenizer, feature extractor)
that `CtcModel` loads exactly as it loads a fine-tuned XLS-R.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from asr_worker.decoding import CtcTokens, WordLM, beam_search
from asr_worker.model import padded_logits
from lidroute.train.budget import Budget
from lidroute.train.corpus import (
    CODECS,
    RT60,
    add_noise,
    add_pauses,
    change_speed,
    change_tempo,
    change_timbre,
    draw_codec,
    json_tuples,
    reverberate,
    room_response,
    telephone,
    through_codec,
)
from lidroute.train.synth import (
    VARIANTS,
    Utterance,
    get_language,
    make_sentences,
    speak_texts,
    synth_utterances,
    vocabulary,
)

if TYPE_CHECKING:
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Processor

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
PAD = "<pad>"
UNK = "<unk>"
WORD_DELIMITER = "|"
# The restricted vocabulary a model was trained on, one word per line, beside its weights: sample
# and test speech for that model is drawn from these words.
TRAINING_WORDS = "training_words.txt"
# Voice variants never heard in training; evaluation speaks with them.
EVAL_VARIANTS: tuple[str, ...] = ("m3", "f4")


def normalize_text(text: str) -> str:
    """The transcript form the model learns: NFC, lowercase, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def normalize_reference(text: str) -> str:
    """`normalize_text` without the punctuation at the edges of words: real transcripts and other
    systems' output carry sentence punctuation ("Mr. Quilter ... gospel.") that no CTC recognizer
    here writes. Apostrophes and hyphens inside words stay, and a token of punctuation alone
    stays, so that the words of the normalised text are the raw text's whitespace tokens one for
    one (`workbench.scoring.key_words`)."""
    return normalize_text(" ".join(_strip_punctuation(token) for token in text.split()))


def _strip_punctuation(token: str) -> str:
    edges = "".join({c for c in token if unicodedata.category(c).startswith("P")})
    return token.strip(edges) or token


def error_rate(references: Sequence[str], hypotheses: Sequence[str], *, words: bool = False) -> float:
    """Corpus-level CER (or WER) by jiwer: total edits over total reference length."""
    import jiwer

    measure = jiwer.wer if words else jiwer.cer
    return float(measure(list(references), list(hypotheses)))


def characters(transcripts: Iterable[str]) -> Counter[str]:
    """Character counts of the transcripts in the form the model learns (NFC, lowercase), spaces excluded."""
    counts: Counter[str] = Counter()
    for text in transcripts:
        counts.update(c for c in normalize_text(text) if c != " ")
    return counts


def build_processor(transcripts: Sequence[str], directory: Path) -> Wav2Vec2Processor:
    """Character vocabulary from the transcripts: `<pad>` (the CTC blank) is 0, then `<unk>`, `|`, letters."""
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    chars = sorted(characters(transcripts))
    vocab = {PAD: 0, UNK: 1, WORD_DELIMITER: 2} | {c: i + 3 for i, c in enumerate(chars)}
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False, indent=1), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        unk_token=UNK,
        pad_token=PAD,
        word_delimiter_token=WORD_DELIMITER,
        bos_token=None,  # CTC has no sentence markers; defaults would add ids the model lacks
        eos_token=None,
    )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=SAMPLE_RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    return Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)


@dataclass(frozen=True)
class _Batch:
    inputs: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    seconds: float


def _make_batches(
    clips: Sequence[tuple[str, np.ndarray]], processor: Wav2Vec2Processor, batch_seconds: float
) -> list[_Batch]:
    """Length-sorted batches of about `batch_seconds` of audio each (little padding, even cost per step).

    `clips` are (transcript, 16 kHz audio) pairs.
    """
    order = sorted(range(len(clips)), key=lambda i: len(clips[i][1]))
    groups: list[list[int]] = [[]]
    for i in order:
        longest = len(clips[i][1]) / SAMPLE_RATE
        if groups[-1] and longest * (len(groups[-1]) + 1) > batch_seconds:
            groups.append([])
        groups[-1].append(i)
    batches = []
    for group in groups:
        audio = [clips[i][1] for i in group]
        features = processor.feature_extractor(
            audio, sampling_rate=SAMPLE_RATE, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        ids = [processor.tokenizer(normalize_text(clips[i][0])).input_ids for i in group]
        labels = torch.full((len(ids), max(len(x) for x in ids)), -100, dtype=torch.long)
        for row, x in enumerate(ids):
            labels[row, : len(x)] = torch.tensor(x)
        batches.append(
            _Batch(
                features.input_values,
                features.attention_mask,
                labels,
                sum(len(a) for a in audio) / SAMPLE_RATE,
            )
        )
    return batches


@dataclass(frozen=True)
class Perturbation:
    """The training-time augmentation: each share of clips gets that change, drawn afresh each epoch.

    Synthetic voices are cleaner and more regular than any microphone: without this a model
    trained on them fails on speaking rates, noise and telephone audio it has not heard (the
    `test_hard` split), which is what real traffic brings. Measured one condition at a time on
    recognizers trained without it (`lidroute corpus conditions`), unheard voices cost little,
    speaking rates outside training's and 10-20 dB noise about 4-5 points of CER each, and noise
    heard through a telephone channel 16. Hence tempo changes that keep the voice, speed changes
    (resampling: pitch and formants move, i.e. other voices), noise, and the channel applied
    after the noise, as a call does. Pauses come first (silence inside and around the speech,
    `add_pauses`): without them every recognizer lost words around a 3 s silence in a request
    (`tests/test_failures.py`), up to all word boundaries. Reports record it, so a model says how
    it was trained; a report from before pauses existed has no `pause_share` and had none.

    A random equaliser (`change_timbre`, `timbre_share` of clips) is off by default, and then not
    drawn at all, so the models trained before it existed are reproduced draw for draw. It was
    tried for the voices that cost the recognizers most on `test_hard` (low voices with unusual
    spectra, the history of docs/models.md): at half the clips it moved nothing measurable in 800 further
    updates of the German model. Real microphones and rooms colour speech more than espeak-ng's
    voices do, so it stays an option for real data.
    """

    pause: tuple[float, float] = (0.3, 2.5)
    pause_share: float = 0.2
    tempo: tuple[float, float] = (0.7, 1.4)
    tempo_share: float = 0.5
    speed: tuple[float, float] = (0.9, 1.1)
    speed_share: float = 0.3
    snr_db: tuple[float, float] = (5.0, 30.0)
    noise_share: float = 0.6
    telephone_share: float = 0.3
    timbre_share: float = 0.0
    timbre_db: float = 6.0
    #: Rooms (`room_response`, reverberation times in `rt60` s) and lossy codecs (`CODECS`, one
    #: drawn per clip): what recorded speech brings that synthetic speech lacks. Off by default,
    #: and then not drawn, like the equaliser.
    reverb_share: float = 0.0
    rt60: tuple[float, float] = RT60
    codec_share: float = 0.0

    def __post_init__(self) -> None:
        """A share outside 0–1 or a range upside down would train on something else than asked,
        silently; `--augmentation` reads these from the command line."""
        for name, value in asdict(self).items():
            if name.endswith("_share") and not 0 <= value <= 1:
                raise ValueError(f"{name} is a share of clips between 0 and 1, not {value}")
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"{name} is a range LOW,HIGH with LOW <= HIGH, not {value}")
        if min(self.tempo[0], self.speed[0], self.rt60[0]) <= 0 or self.pause[0] < 0 or self.timbre_db < 0:
            raise ValueError(
                "tempo and speed factors are positive, as are reverberation times; pauses and"
                " timbre_db not negative"
            )

    @staticmethod
    def describe(fields: Mapping[str, Any]) -> str:
        """A model card's words for a recorded `Perturbation` (`asdict` of one, from a report)."""
        how = Perturbation(**({"pause_share": 0.0} | {k: json_tuples(v) for k, v in fields.items()}))

        def share(x: float) -> str:
            return f"{100 * x:.0f} %"

        timbre = (
            f"a random equaliser of up to ±{how.timbre_db:g} dB a band ({share(how.timbre_share)}), "
            if how.timbre_share
            else ""
        )
        pauses = (
            f"a pause of {how.pause[0]:g}–{how.pause[1]:g} s inside the speech and up to half that "
            f"before and after ({share(how.pause_share)}), "
            if how.pause_share
            else ""
        )
        room = (
            f"a room of reverberation time {how.rt60[0]:g}–{how.rt60[1]:g} s ({share(how.reverb_share)}), "
            if how.reverb_share
            else ""
        )
        codec = f", then a codec ({', '.join(CODECS)}; {share(how.codec_share)})" if how.codec_share else ""
        return pauses + (
            f"tempo {how.tempo[0]}–{how.tempo[1]}× with pitch kept ({share(how.tempo_share)} of clips), "
            f"speed {how.speed[0]}–{how.speed[1]}× ({share(how.speed_share)}), "
            f"{timbre}{room}noise at {how.snr_db[0]:g}–{how.snr_db[1]:g} dB ({share(how.noise_share)}), "
            f"then an 8 kHz telephone channel ({share(how.telephone_share)}){codec}"
        )


PERTURBATION = Perturbation()


def perturb(audio: np.ndarray, rng: np.random.Generator, how: Perturbation = PERTURBATION) -> np.ndarray:
    """One draw of `how`: pauses, tempo (log-uniform), speed, timbre, a room, noise, then the
    channel: telephone band, then a codec (the order a call takes)."""
    if rng.random() < how.pause_share:
        audio = add_pauses(audio, rng, how.pause)
    if rng.random() < how.tempo_share:
        audio = change_tempo(audio, float(np.exp(rng.uniform(*np.log(how.tempo)))))
    if rng.random() < how.speed_share:
        audio = change_speed(audio, rng.uniform(*how.speed))
    if how.timbre_share and rng.random() < how.timbre_share:
        audio = change_timbre(audio, rng, how.timbre_db)
    if how.reverb_share and rng.random() < how.reverb_share:
        audio = reverberate(audio, room_response(rng, float(rng.uniform(*how.rt60))))
    if rng.random() < how.noise_share:
        audio = add_noise(audio, rng.uniform(*how.snr_db), rng)
    if rng.random() < how.telephone_share:
        audio = telephone(audio)
    if how.codec_share and rng.random() < how.codec_share:
        audio = through_codec(audio, draw_codec(rng))
    return audio


def seeded_rng(seed: int) -> np.random.Generator:
    """Torch seeded with `seed`, at most two threads (trainings share the cores), and numpy's generator
    of the same seed: how every recipe here starts, so that a run is reproducible from its seed."""
    torch.manual_seed(seed)
    torch.set_num_threads(min(torch.get_num_threads(), 2) or 1)
    return np.random.default_rng(seed)


def save_recognizer(model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, out_dir: Path) -> None:
    """The `save_pretrained` directory `CtcModel` loads: the weights (safetensors) and the processor."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


class Optimisation(Protocol):
    """What the training loop needs of a recipe (`CtcRecipe`, `transfer.FinetuneRecipe`)."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> float: ...
    @property
    def batch_seconds(self) -> float: ...


def fit_ctc(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    clips: Sequence[tuple[str, np.ndarray]],
    budget: Budget,
    recipe: Optimisation,
    rng: np.random.Generator,
    *,
    how: Perturbation | None = PERTURBATION,
) -> float:
    """The CTC training loop that from-scratch training, backbone pretraining and fine-tuning share.

    Each epoch draws fresh augmentation (`how`; None: none) and reshuffles length-sorted batches;
    only parameters that require gradients are optimised, so a frozen feature encoder stays as it
    was. Batches go to the device the model is on. Returns the seconds of audio trained on.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    audio_seconds = 0.0
    while not budget.done:
        epoch = [(text, perturb(audio, rng, how) if how else audio) for text, audio in clips]
        batches = _make_batches(epoch, processor, recipe.batch_seconds)
        model.train()
        for b in rng.permutation(len(batches)):
            if budget.done:
                break
            for group in optimizer.param_groups:
                group["lr"] = recipe.lr * budget.lr_factor(recipe.warmup, floor=0.02)
            batch = batches[b]
            loss = model(
                batch.inputs.to(device),
                attention_mask=batch.attention_mask.to(device),
                labels=batch.labels.to(device),
            ).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            budget.steps += 1
            audio_seconds += batch.seconds
            if budget.steps % 20 == 0:
                log.info(
                    "training",
                    extra={
                        "step": budget.steps,
                        "loss": round(loss.item(), 3),
                        "seconds": round(budget.elapsed),
                    },
                )
    model.eval()
    return audio_seconds


@torch.inference_mode()
def frame_log_probs(
    model: Wav2Vec2ForCTC, processor: Wav2Vec2Processor, audio: Sequence[np.ndarray], batch_size: int = 16
) -> list[np.ndarray]:
    """Per utterance, the (frames, tokens) CTC log-probabilities, on the device the model is on.

    Batched for speed as the worker batches (`padded_logits`), each utterance's frames cut to its
    own length.
    """
    model.eval()
    order = sorted(range(len(audio)), key=lambda i: len(audio[i]))
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        logits = padded_logits(model, processor, [audio[i] for i in chunk])
        out.update(
            (i, torch.log_softmax(row.float(), dim=-1).cpu().numpy())
            for i, row in zip(chunk, logits, strict=True)
        )
    return [out[i] for i in range(len(audio))]


def transcribe(
    model: Wav2Vec2ForCTC,
    processor: Wav2Vec2Processor,
    audio: Sequence[np.ndarray],
    batch_size: int = 16,
    lm: WordLM | None = None,
) -> list[str]:
    """CTC decoding as the worker does it: greedy, or a beam search with `lm` when one is given."""
    return decode(processor, frame_log_probs(model, processor, audio, batch_size), lm)


def decode(
    processor: Wav2Vec2Processor, log_probs: Sequence[np.ndarray], lm: WordLM | None = None
) -> list[str]:
    """Normalised transcripts of computed frames: greedy, or a beam search with `lm`."""
    if lm is None:
        texts = [processor.decode(lp.argmax(axis=-1)) for lp in log_probs]
    else:
        tokens, settings = CtcTokens.of(processor), lm.settings()
        texts = [beam_search(lp, tokens, lm, settings).text for lp in log_probs]
    return [normalize_text(t) for t in texts]


def training_words(model_dir: Path) -> list[str] | None:
    """The words a restricted-vocabulary model was trained on (None: not restricted, or not ours).

    Sample speech for such a model is drawn from these words, in new sentences and voices.
    """
    words_file = Path(model_dir) / TRAINING_WORDS
    return words_file.read_text(encoding="utf-8").split() if words_file.exists() else None


def _restricted_vocabulary(language: str, vocab_words: int | None, seed: int) -> list[str]:
    words = vocabulary(language)
    if vocab_words is None or vocab_words >= len(words):
        return words
    rng = np.random.default_rng([seed, 7919])
    # Words of 3-10 letters: long enough to be real speech, short enough for short utterances.
    pool = [w for w in words if 3 <= len(w) <= 10] or words
    return sorted(pool[i] for i in rng.choice(len(pool), size=min(vocab_words, len(pool)), replace=False))


def _model_card(out_dir: Path, language: str, metrics: dict[str, float], settings: dict[str, object]) -> None:
    spec = get_language(language)
    recipe = settings["recipe"]
    assert isinstance(recipe, CtcRecipe)
    call = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    text = f"""# Small {spec.name} CTC speech recognizer (synthetic speech, restricted vocabulary)

A `transformers` `Wav2Vec2ForCTC` trained from scratch by `lidroute` so that the system runs
offline. Load it like any fine-tuned XLS-R:
`Wav2Vec2ForCTC.from_pretrained(dir)`, `Wav2Vec2Processor.from_pretrained(dir)`; greedy argmax
and `processor.batch_decode(ids, output_word_offsets=True)` give words with frame offsets
(one frame = {metrics["frame_ms"]:.0f} ms).

## How it was made

`asr_worker.recipes.ctc.train_ctc(out_dir, {language!r}, {call})`

- Speech: espeak-ng voice `{spec.espeak_voice}` with random voice variants (not {", ".join(EVAL_VARIANTS)}),
  speeds and pitches, speed, telephone-channel and noise perturbation, speaking random sequences of
  {recipe.min_words}–{recipe.max_words} words.
- Vocabulary: {int(metrics["vocab_words"])} real {spec.name} words drawn (seed {settings["seed"]}) from
  Babel's CLDR data (names of territories, languages, currencies, months...), read at run time;
  no text is stored in the repository. **The model only knows these words' sound-to-letter
  patterns well**: other words come out approximately, and it knows nothing of grammar.
- Characters: {int(metrics["chars"])} symbols (`<pad>` = CTC blank = id 0, `<unk>`, `|` word delimiter),
  NFC lowercase.
- Model: wav2vec2 architecture from a fresh `Wav2Vec2Config` (hidden {recipe.hidden_size},
  {recipe.num_layers} layers, {len(recipe.conv_dim)} convolutions of {recipe.conv_dim[0]} channels,
  layer-norm feature encoder),
  {int(metrics["params"]):,} parameters, no pretraining. CTC loss (mean), AdamW with warm-up and
  cosine decay over the budget, gradient clipping, length-sorted batches:
  {int(metrics["steps"])} steps ({metrics["epochs"]:.1f} epochs over {int(metrics["n_train"])} utterances)
  in {metrics["train_seconds"]:.0f} s on the CPU.

## Scores

On {int(metrics["n_eval"])} held-out utterances: new combinations of the same words, spoken by voice
variants {", ".join(EVAL_VARIANTS)} that training never heard. Greedy decoding, no language model.

| CER | WER |
|---|---|
| {100 * metrics["cer"]:.1f} % | {100 * metrics["wer"]:.1f} % |

## Limits

Synthetic speech and a tiny vocabulary: on real recordings expect most words wrong (domain
shift). It is a demo model that exercises the whole pipeline offline, not a usable recognizer.
"""
    (out_dir / "README.md").write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class CtcRecipe:
    """Architecture and optimisation of the from-scratch recognizer, chosen by runs on 2 CPU cores.

    A short feature encoder (5 convolutions, 20 ms frames) and a narrow transformer keep a step
    cheap; CTC from scratch sits on a "blank only" plateau for its first few hundred updates,
    so what shortens training is the number of updates, not their size.
    """

    hidden_size: int = 144
    num_layers: int = 4
    num_heads: int = 4
    conv_dim: tuple[int, ...] = (64, 64, 64, 64, 64)
    conv_kernel: tuple[int, ...] = (10, 8, 8, 4, 4)
    conv_stride: tuple[int, ...] = (5, 4, 4, 2, 2)
    dropout: float = 0.05
    mask_time_prob: float = 0.0
    batch_seconds: float = 20.0
    lr: float = 3e-3
    warmup: float = 0.08
    min_words: int = 1
    max_words: int = 4

    def config(self, vocab_size: int) -> Wav2Vec2Config:
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(
            vocab_size=vocab_size,
            pad_token_id=0,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.hidden_size * 4,
            conv_dim=list(self.conv_dim),
            conv_kernel=list(self.conv_kernel),
            conv_stride=list(self.conv_stride),
            feat_extract_norm="layer",
            do_stable_layer_norm=True,
            num_conv_pos_embeddings=64,
            num_conv_pos_embedding_groups=16,
            hidden_dropout=self.dropout,
            attention_dropout=self.dropout,
            activation_dropout=0.0,
            feat_proj_dropout=self.dropout,
            final_dropout=0.0,
            layerdrop=0.0,
            mask_time_prob=self.mask_time_prob,
            mask_time_length=5,
            ctc_loss_reduction="mean",
            ctc_zero_infinity=True,
        )


@dataclass(frozen=True)
class _Speech:
    """A from-scratch run's synthetic speech: its restricted vocabulary, the training utterances, the
    held-out ones (new sentences in voices training never hears) and the seconds synthesis took."""

    words: list[str]
    train: list[Utterance]
    evaluation: list[Utterance]
    seconds: float


def train_ctc(
    out_dir: Path,
    language: str,
    *,
    seed: int = 0,
    max_train_seconds: float | None = 180.0,
    max_steps: int | None = None,
    vocab_words: int | None = 60,
    n_train: int = 600,
    n_eval: int = 100,
    recipe: CtcRecipe = CtcRecipe(),
) -> dict[str, float]:
    """Trains, saves and evaluates a CTC model; returns `{"cer", "train_seconds", "params", ...}`.

    Training stops after `max_steps` updates or `max_train_seconds` of wall-clock time (synthesis
    not counted), whichever comes first; see `lidroute.train.budget.Budget`.
    """
    from transformers import Wav2Vec2ForCTC

    spec = get_language(language)
    out_dir = Path(out_dir)
    rng = seeded_rng(seed)
    speech = _synthesise(language, seed, vocab_words, n_train, n_eval, recipe)
    with tempfile.TemporaryDirectory(prefix="ctc-vocab-") as tmp:
        processor = build_processor([u.text for u in speech.train], Path(tmp))
    model = Wav2Vec2ForCTC(recipe.config(len(processor.tokenizer)))
    budget = Budget(max_steps=max_steps, max_seconds=max_train_seconds)
    audio_seconds = fit_ctc(model, processor, [(u.text, u.audio) for u in speech.train], budget, recipe, rng)
    train_seconds = budget.elapsed
    model.eval()
    save_recognizer(model, processor, out_dir)
    if vocab_words is not None:
        (out_dir / TRAINING_WORDS).write_text("\n".join(speech.words) + "\n", encoding="utf-8")
    references, hypotheses = _read_back(out_dir, speech.evaluation)
    metrics = _scores(references, hypotheses) | _run_facts(
        model, speech, budget.steps, train_seconds, audio_seconds
    )
    settings: dict[str, object] = {
        "seed": seed,
        "max_train_seconds": max_train_seconds,
        "max_steps": max_steps,
        "vocab_words": vocab_words,
        "n_train": n_train,
        "n_eval": n_eval,
        "recipe": recipe,
    }
    _model_card(out_dir, language, metrics, settings)
    for ref, hyp in list(zip(references, hypotheses, strict=True))[:5]:
        log.info("example", extra={"reference": ref, "hypothesis": hyp, "language": spec.code})
    log.info("CTC model written", extra={"out_dir": str(out_dir), **metrics})
    return metrics


def _synthesise(
    language: str, seed: int, vocab_words: int | None, n_train: int, n_eval: int, recipe: CtcRecipe
) -> _Speech:
    """The training speech in the training voices, and held-out sentences of the same words in others."""
    words = _restricted_vocabulary(language, vocab_words, seed)
    train_variants = [v for v in VARIANTS if v not in EVAL_VARIANTS]
    started = time.monotonic()
    train = synth_utterances(
        language,
        n_train,
        seed=seed,
        variants=train_variants,
        vocab=words,
        min_words=recipe.min_words,
        max_words=recipe.max_words,
    )
    seen = {u.text for u in train}
    eval_sentences = [
        s for s in make_sentences(language, n_eval * 2 + 50, seed=seed + 1000, vocab=words) if s not in seen
    ][:n_eval]
    evaluation = speak_texts(eval_sentences, language, seed=seed + 2000, variants=EVAL_VARIANTS)
    return _Speech(words, train, evaluation, time.monotonic() - started)


def _read_back(out_dir: Path, evaluation: Sequence[Utterance]) -> tuple[list[str], list[str]]:
    """References and transcripts of the held-out speech by the saved directory, loaded the way the
    worker loads it: the scores are of what ships, not of the model in memory."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    loaded = Wav2Vec2ForCTC.from_pretrained(out_dir)
    loaded_processor = Wav2Vec2Processor.from_pretrained(out_dir)
    references = [normalize_text(u.text) for u in evaluation]
    return references, transcribe(loaded, loaded_processor, [u.audio for u in evaluation])


def _scores(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """The metrics' first keys: CER and WER."""
    return {
        "cer": error_rate(references, hypotheses),
        "wer": error_rate(references, hypotheses, words=True),
    }


def _run_facts(
    model: Wav2Vec2ForCTC, speech: _Speech, steps: int, train_seconds: float, audio_seconds: float
) -> dict[str, float]:
    """The metrics' other keys: what the run cost, on what, and the model's size and frame length."""
    return {
        "train_seconds": train_seconds,
        "synth_seconds": speech.seconds,
        "params": float(sum(p.numel() for p in model.parameters())),
        "steps": float(steps),
        "epochs": audio_seconds / max(sum(len(u.audio) for u in speech.train) / SAMPLE_RATE, 1e-9),
        "audio_seconds_per_second": audio_seconds / max(train_seconds, 1e-9),
        "n_train": float(len(speech.train)),
        "n_eval": float(len(speech.evaluation)),
        "vocab_words": float(len(speech.words)),
        "chars": float(model.config.vocab_size),
        "frame_ms": 1000.0 * model.config.inputs_to_logits_ratio / SAMPLE_RATE,
    }


def main(argv: list[str] | None = None) -> None:
    """`python -m asr_worker train --out DIR --language xx`: prints the scores as JSON."""
    import argparse

    from lidroute.logs import configure

    parser = argparse.ArgumentParser(prog="asr_worker train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="directory to write (save_pretrained layout)")
    parser.add_argument("--language", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=180.0, help="wall-clock training budget")
    parser.add_argument("--steps", type=int, help="stop after this many updates (reproducible budget)")
    parser.add_argument("--vocab-words", type=int, default=60, help="restrict sentences to N words (0: all)")
    parser.add_argument("--utterances", type=int, default=600, help="training utterances")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure(args.log_level, fmt="text", service="asr-train")
    try:
        metrics = train_ctc(
            Path(args.out),
            args.language,
            seed=args.seed,
            max_train_seconds=args.seconds,
            max_steps=args.steps,
            vocab_words=args.vocab_words or None,
            n_train=args.utterances,
        )
    except (KeyError, ValueError, RuntimeError) as exc:
        parser.exit(2, f"asr_worker train: {exc.args[0] if exc.args else exc}\n")
    print(json.dumps({key: round(value, 4) for key, value in metrics.items()}))


__all__ = [
    "EVAL_VARIANTS",
    "TRAINING_WORDS",
    "build_processor",
    "error_rate",
    "main",
    "normalize_text",
    "train_ctc",
    "training_words",
]
