"""/ui/datasets: the built-in data sets and the visitor's own (uploads and versions), and a data
set's page: its facts, lineage, class counts and a grid of its training images (PNGs rendered
here without torch by shared.samples; `/ui/datasets/{id}/images/{index}`)."""

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import FleetDep, SessionDep, SettingsDep, StoreDep
from api.ui.render import page_router, render
from api.ui.session import SignedIn
from shared import dataset_service, versions
from shared.catalog import DATASETS
from shared.errors import NotFound
from shared.models import DatasetRow
from shared.samples import Samples, load_samples
from shared.settings import Settings
from shared.store import ObjectStore
from shared.workers import WaitingFor

router = page_router()
PER_CLASS = 8  # images of each class in the overview
OVERVIEW_CLASSES = 20  # classes the overview shows images of; more: choose a class
PAGE = 48  # images of one class a page
IMAGE_MAX_AGE_S = 86_400  # a data set's images never change
DatasetId = Annotated[str, Path(max_length=64)]


@dataclass(frozen=True)
class DatasetFacts:
    """A data set as the pages show it: a built-in one (row None) or one of the visitor's."""

    id: str
    name: str
    num_classes: int
    train_samples: int
    test_samples: int
    channels: int
    size: int
    row: DatasetRow | None

    @property
    def kind(self) -> str:
        return "built-in" if self.row is None else ("version" if self.row.parent_id else "upload")


def facts_of(session: SessionDep, user_id: int, dataset_id: str) -> DatasetFacts:
    """A built-in data set, or the visitor's (NotFound for an unknown id and another user's alike)."""
    if dataset_id in DATASETS:
        info = DATASETS[dataset_id]
        return DatasetFacts(dataset_id, dataset_id, info.num_classes, info.train_samples, info.test_samples,
                            info.channels, info.size, None)
    if not dataset_id.startswith("ds_"):
        raise NotFound(f"no data set {dataset_id!r}; built-in: {', '.join(DATASETS)}, or one of yours (/ui/datasets)")
    row = dataset_service.get_dataset(session, user_id, dataset_id)
    return DatasetFacts(row.id, row.name, row.num_classes, row.train_samples, row.test_samples, row.channels,
                        row.size, row)


def samples_of(facts: DatasetFacts, store: ObjectStore, settings: Settings) -> Samples | None:
    return load_samples(facts.id, facts.row, store, settings.data_dir)


def class_names(samples: Samples | None, num_classes: int) -> list[str]:
    names = samples.classes if samples is not None and samples.classes else None
    return [f"{k} ({names[k]})" if names and k < len(names) else str(k) for k in range(num_classes)]


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, visitor: SignedIn, session: SessionDep, fleet: FleetDep) -> Response:
    builtin = [(facts_of(session, visitor.user.id, name),
                None if fleet is None else fleet.waiting_for(name) != WaitingFor.dataset) for name in DATASETS]
    own = dataset_service.list_datasets(session, visitor.user.id)
    return render(request, "datasets.html", visitor, nav="datasets", builtin=builtin, own=own)


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(request: Request, dataset_id: DatasetId, visitor: SignedIn, session: SessionDep, store: StoreDep,
                 settings: SettingsDep, cls: Annotated[int | None, Query(ge=0)] = None,
                 page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    """Facts, lineage and class counts; images: PER_CLASS of each class, or (`cls`) one class, PAGE at a time."""
    facts = facts_of(session, visitor.user.id, dataset_id)
    samples = samples_of(facts, store, settings)
    names = class_names(samples, facts.num_classes)
    counts = samples.counts(facts.num_classes) if samples is not None else None
    shown: list[tuple[int, list[int]]] = []
    pages = 0
    if samples is not None:
        if cls is not None and cls < facts.num_classes:
            members = [int(i) for i in (samples.labels == cls).nonzero()[0]]
            pages = max(1, -(-len(members) // PAGE))
            shown = [(cls, members[(page - 1) * PAGE: page * PAGE])]
        elif facts.num_classes <= OVERVIEW_CLASSES:
            shown = [(k, [int(i) for i in (samples.labels == k).nonzero()[0][:PER_CLASS]]) for k in range(facts.num_classes)]
    chain = versions.lineage(session, visitor.user.id, facts.id)
    return render(
        request, "dataset.html", visitor, nav="datasets", ds=facts, names=names, counts=counts,
        most=max(counts) if counts else 0, shown=shown, cls=cls, page=page, pages=pages, chain=chain,
        page_url=lambda number: f"/ui/datasets/{facts.id}?" + urlencode({"cls": cls, "page": number}),
        children=dataset_service.versions_of(session, visitor.user.id, facts.id),
    )


@router.get("/datasets/{dataset_id}/images/{index}")
def dataset_image(dataset_id: DatasetId, index: int, visitor: SignedIn, session: SessionDep, store: StoreDep,
                  settings: SettingsDep) -> Response:
    """Training sample `index` of the data set (as its jobs number them), as a PNG."""
    facts = facts_of(session, visitor.user.id, dataset_id)
    samples = samples_of(facts, store, settings)
    if samples is None:
        raise NotFound(f"this server has no copy of {dataset_id}'s images")
    if not 0 <= index < len(samples):
        raise NotFound(f"{dataset_id} has training samples 0 to {len(samples) - 1}; there is no {index}")
    return Response(samples.png(index), media_type="image/png",
                    headers={"Cache-Control": f"private, max-age={IMAGE_MAX_AGE_S}", "X-Content-Type-Options": "nosniff"})
