"""/ui/submit: a job's form, built from the catalog (shared.catalog, as GET /v1/catalog serves
it): data set (built-in or one of the visitor's), loss with its formula, noise kind and rate, α
and β with the preset values of the chosen data set, loss and noise (…/submit/preset answers
them as the selection changes: api/static/ui/submit.js), epochs, train size, validation split
and seed. A blank field takes the preset. The form posts through the path of POST /v1/jobs
(shared.jobs.create_job); a refused value is shown at its field, the visitor's values kept, and
a created job's page follows.
"""

import math
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import FleetDep, SessionDep, SettingsDep
from api.ui.jobs import LOSS_NAMES
from api.ui.render import page_router, redirect, render
from api.ui.session import CsrfChecked, SignedIn
from shared import jobs
from shared.catalog import DATASETS, LOSSES, NOISE_KINDS
from shared.dataset_service import list_datasets
from shared.errors import NoisyfitError, SpecError
from shared.rules import parse_loss
from shared.spec import JobSpec
from shared.workers import WaitingFor

router = page_router()
FIELDS = ("dataset", "loss", "noise_type", "noise_rate", "alpha", "beta", "epochs", "train_size", "validation_split",
          "seed")
DEFAULTS = {"dataset": "fashion-mnist", "loss": "nce+rce", "noise_type": "symmetric", "noise_rate": "0.4",
            "validation_split": "0", "seed": "0"}
NUMBERS: dict[str, type] = {"noise_rate": float, "alpha": float, "beta": float, "epochs": int, "train_size": int,
                            "validation_split": float, "seed": int}
# The noise kinds a form can ask for (a transition matrix is written through the API).
NOISE_CHOICES = [name for name, kind in NOISE_KINDS.items() if not kind.needs_matrix]
# A refused spec field → the input that sets it (the others are named by themselves or shown above the form).
INPUT_OF = {"noise": "noise_type", "noise.type": "noise_type", "noise.rate": "noise_rate", "noise.matrix": "noise_type",
            "loss_params": "loss"}
FormText = Annotated[str, Form(max_length=64)]


def input_of(field: str | None) -> str | None:
    """The form input a refusal's `field` names, or None for one the form has no input for."""
    if not field:
        return None
    name = INPUT_OF.get(field) or INPUT_OF.get(field.partition(".")[0], field)
    return name if name in FIELDS else None


def _number(values: dict[str, str], name: str) -> int | float | None:
    text = values.get(name, "").strip()
    if not text:
        return None
    kind = NUMBERS[name]
    try:
        value = kind(text)
    except ValueError:
        example = "50" if kind is int else "0.4"
        raise SpecError(f"{text!r} is not a {'whole number' if kind is int else 'number'}; enter one such as {example}, "
                        "or leave it blank for the preset", name) from None
    if not math.isfinite(value):
        raise SpecError(f"{text!r} is not a finite number", name)
    return value


def spec_of(values: dict[str, str]) -> dict[str, Any]:
    """The job spec the form's values ask for (blank fields left to the presets), as POST /v1/jobs takes it;
    SpecError naming the input of a value that is not a number."""
    numbers = {name: _number(values, name) for name in NUMBERS}
    spec: dict[str, Any] = {"dataset": values.get("dataset", "").strip(), "loss": values.get("loss", "").strip(),
                            "noise": {"type": values.get("noise_type", "none"), "rate": numbers.pop("noise_rate") or 0.0}}
    return spec | {name: value for name, value in numbers.items() if value is not None}


def loss_formula(name: str) -> list[str]:
    """The loss's formula as lines: a combination's two terms, weighed α and β, then each term's."""
    form = parse_loss(name)
    if "+" in form.name:
        first, second = form.terms
        return [f"α · {first.upper()} + β · {second.upper()}", LOSSES[first].formula, LOSSES[second].formula]
    info = LOSSES[form.name]
    return [info.formula, "α weighs CE and β RCE" if info.terms else "α scales it; β is not used"]


def preview(session: SessionDep, user_id: int, values: dict[str, str]) -> dict[str, Any]:
    """What the paper's preset gives for the form's data set, loss and noise (the values a blank
    field takes), and the loss's formula; or the first problem with those choices (`error`)."""
    try:
        spec = spec_of({name: values.get(name, "") for name in ("dataset", "loss", "noise_type", "noise_rate")})
        resolved = jobs.resolve_for(session, user_id, JobSpec.parse(spec))
    except NoisyfitError as exc:
        return {"error": {"field": input_of(exc.field), "message": exc.message}}
    return {"formula": loss_formula(resolved.loss), "loss": resolved.loss, "takes_beta": len(resolved.loss_terms) == 2,
            "alpha": resolved.alpha, "beta": resolved.beta, "loss_params": resolved.loss_params,
            "epochs": resolved.epochs, "train_size": resolved.train_size, "model": resolved.model, "lr": resolved.lr,
            "batch_size": resolved.batch_size}


def _form(request: Request, visitor: SignedIn, session: SessionDep, fleet: FleetDep, values: dict[str, str], *,
          error: NoisyfitError | None = None, status_code: int = 200) -> Response:
    # Flagged: a data set that live workers are up for but none holds (a job on it is refused).
    datasets = [(name, name, fleet is None or fleet.waiting_for(name) != WaitingFor.dataset) for name in DATASETS]
    own = [(row.id, f"{row.name} ({row.id})") for row in list_datasets(session, visitor.user.id)]
    preset = preview(session, visitor.user.id, values)
    errors = {preset["error"]["field"]: preset["error"]["message"]} if preset.get("error", {}).get("field") else {}
    field = input_of(error.field) if error is not None else None
    if error is not None and field is not None:
        errors[field] = error.message
    return render(
        request, "submit.html", visitor, nav="submit", status_code=status_code, values=values, datasets=datasets,
        own=own, losses=LOSS_NAMES, noise_kinds=[(name, NOISE_KINDS[name]) for name in NOISE_CHOICES],
        preset=preset, errors=errors, general=error.message if error is not None and field is None else None,
    )


@router.get("/submit", response_class=HTMLResponse)
def submit_form(request: Request, visitor: SignedIn, session: SessionDep, fleet: FleetDep,
                copy: Annotated[str | None, Query(alias="from", max_length=64)] = None,
                dataset: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """The form, blank but for sensible choices (`dataset` chosen), or filled from one of the
    visitor's jobs (`from`)."""
    values = dict(DEFAULTS, **({"dataset": dataset} if dataset else {}))
    if copy:
        spec = jobs.get_job(session, visitor.user.id, copy).spec
        values = {"dataset": spec["dataset"], "loss": spec["loss"], "noise_type": spec["noise"]["type"],
                  "noise_rate": str(spec["noise"]["rate"]), "alpha": str(spec["alpha"]),
                  "beta": str(spec["beta"]) if spec["beta"] else "", "epochs": str(spec["epochs"]),
                  "train_size": str(spec["train_size"]), "validation_split": str(spec["validation_split"]),
                  "seed": str(spec["seed"])}
    return _form(request, visitor, session, fleet, values)


@router.get("/submit/preset")
def submit_preset(visitor: SignedIn, session: SessionDep, dataset: Annotated[str, Query(max_length=64)] = "",
                  loss: Annotated[str, Query(max_length=64)] = "", noise_type: Annotated[str, Query(max_length=32)] = "none",
                  noise_rate: Annotated[str, Query(max_length=32)] = "") -> dict[str, Any]:
    return preview(session, visitor.user.id, {"dataset": dataset, "loss": loss, "noise_type": noise_type,
                                              "noise_rate": noise_rate})


@router.post("/submit", response_class=HTMLResponse)
def submit_job(request: Request, visitor: CsrfChecked, session: SessionDep, settings: SettingsDep, fleet: FleetDep,
               dataset: FormText = "", loss: FormText = "", noise_type: FormText = "none", noise_rate: FormText = "",
               alpha: FormText = "", beta: FormText = "", epochs: FormText = "", train_size: FormText = "",
               validation_split: FormText = "", seed: FormText = "") -> Response:
    values = {"dataset": dataset, "loss": loss, "noise_type": noise_type, "noise_rate": noise_rate, "alpha": alpha,
              "beta": beta, "epochs": epochs, "train_size": train_size, "validation_split": validation_split,
              "seed": seed}
    try:
        job, _ = jobs.create_job(session, visitor.user.id, spec_of(values), settings)
    except NoisyfitError as exc:
        return _form(request, visitor, session, fleet, values, error=exc, status_code=exc.status)
    return redirect(request, f"/ui/jobs/{job.id}")
