"""lm-evaluation-harness on a model folder, through its Python API (``lm_eval.simple_evaluate`` with the
``hf`` model): any of its tasks by name, or a task YAML of one's own (``dataset_path: json`` over local
files works offline). lm-eval is the optional ``eval`` extra: ``pip install 'minigpt[eval]'``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigpt.errors import ConfigError
from minigpt.tasks.harness.harness_settings import HarnessEvalArgs, is_task_file


def evaluate(model_dir: str | Path, args: HarnessEvalArgs) -> dict[str, Any]:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(
            "evaluation task 'lm_eval' needs lm-evaluation-harness: pip install 'minigpt[eval]' "
            "(or pip install lm-eval)"
        ) from None
    import torch

    from minigpt.models.loading import ALLOW_ON_CLI, check_model_folder, load_tokenizer, remote_code
    from minigpt.tasks.batch_generation import is_chat_model

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a model folder (no config.json)")
    check_model_folder(path)
    trust = remote_code(path, args.trust_remote_code, ALLOW_ON_CLI)  # refuses auto_map unless trusted
    tokenizer = load_tokenizer(str(path), trust_remote_code=args.trust_remote_code, allow=ALLOW_ON_CLI)
    chat = is_chat_model(path, tokenizer, args.apply_chat_template)
    cuda = torch.cuda.is_available()
    model_args: dict[str, Any] = {
        "pretrained": str(path),
        "dtype": "auto" if cuda else "float32",
        "trust_remote_code": trust,
    }
    if args.max_length is not None:
        model_args["max_length"] = args.max_length
    include_defaults = args.include_defaults
    if include_defaults is None:
        include_defaults = not all(is_task_file(t) for t in args.tasks)
    manager = TaskManager(include_path=args.include_path or None, include_defaults=include_defaults)
    try:
        out = lm_eval.simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=list(args.tasks),
            num_fewshot=args.num_fewshot,
            batch_size=args.batch_size,
            device="cuda" if cuda else "cpu",
            limit=args.limit,
            bootstrap_iters=args.bootstrap_iters,
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
            task_manager=manager,
            log_samples=args.samples > 0,
            random_seed=args.seed,
            numpy_random_seed=args.seed,
            torch_random_seed=args.seed,
            fewshot_random_seed=args.seed,
        )
    except (KeyError, FileNotFoundError) as exc:  # an unknown task name, a task file not found
        raise ConfigError(f"evaluation task 'lm_eval': {exc}") from None
    result = summarize(out, args.samples)
    result["settings"] = {**args.model_dump(mode="json"), "apply_chat_template": chat}
    return result


def summarize(out: dict[str, Any], samples: int = 0) -> dict[str, Any]:
    """lm-eval's output → ``{tasks: {task: {metrics, stderr, higher_is_better, n, num_fewshot}}, samples,
    lm_eval_version}``: metric names without lm-eval's ``,none`` filter suffix (another filter is kept in
    brackets), standard errors apart."""
    tasks: dict[str, Any] = {}
    better = out.get("higher_is_better") or {}
    for task, values in (out.get("results") or {}).items():
        metrics, stderr = {}, {}
        for key, value in values.items():
            if "," not in key or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            metric, _, filt = key.partition(",")
            base = metric.removesuffix("_stderr")
            label = base if filt == "none" else f"{base} ({filt})"
            (stderr if metric.endswith("_stderr") else metrics)[label] = float(value)
        counts = (out.get("n-samples") or {}).get(task) or {}
        tasks[task] = {
            "metrics": metrics,
            "stderr": stderr,
            "higher_is_better": {m: bool(v) for m, v in (better.get(task) or {}).items() if v is not None},
            "n": counts.get("effective"),
            "num_fewshot": (out.get("n-shot") or {}).get(task),
        }
    kept = {t: [_sample(s) for s in rows[:samples]] for t, rows in (out.get("samples") or {}).items()}
    return _plain({"tasks": tasks, "samples": kept, "lm_eval_version": out.get("lm_eval_version")})


def _sample(record: dict[str, Any]) -> dict[str, Any]:
    keep = ("doc_id", "target", "arguments", "resps", "filtered_resps", "filter")
    scores = {m: record.get(m) for m in record.get("metrics") or []}
    return {**{k: record.get(k) for k in keep}, "scores": scores}


def _plain(value: Any) -> Any:
    """JSON types only (numpy scalars, tuples)."""

    def default(obj: Any) -> Any:
        return obj.item() if hasattr(obj, "item") else str(obj)

    return json.loads(json.dumps(value, default=default))


def headline(result: dict[str, Any]) -> dict[str, float]:
    """Each task's metrics that are higher-is-better (accuracy, exact match), as ``task metric``."""
    out = {}
    for task, entry in (result.get("tasks") or {}).items():
        for metric, value in entry.get("metrics", {}).items():
            if entry.get("higher_is_better", {}).get(metric.split(" (")[0]):  # without the filter
                out[f"{task} {metric}"] = value
    return out


def describe(result: dict[str, Any]) -> str:
    lines = ["| task | metric | value | ± stderr | items | few-shot |", "|---|---|---|---|---|---|"]
    for task, entry in (result.get("tasks") or {}).items():
        for metric, value in entry.get("metrics", {}).items():
            err = entry.get("stderr", {}).get(metric)
            cells = [task, metric, f"{value:.4g}", f"{err:.3g}" if err is not None else "—"]
            cells += [
                str(entry.get("n") if entry.get("n") is not None else "—"),
                str(entry.get("num_fewshot")),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    version = result.get("lm_eval_version")
    return "\n".join(lines) + (f"\n\nlm-eval {version}.\n" if version else "\n")
