"""ObjectStoreSink: the runner's ArtifactSink over the real S3 server."""

from shared.models import new_id
from shared.store import get_store
from worker.sinks import ObjectStoreSink


def test_the_sink_keeps_a_jobs_files_under_its_prefix(settings):
    store = get_store(settings)
    store.ensure_bucket()
    job_id, other = new_id("job"), new_id("job")
    sink = ObjectStoreSink(store, job_id)
    sink.put("result.json", b'{"ok": true}')
    sink.put("resume.pt", b"\x00weights")
    ObjectStoreSink(store, other).put("result.json", b"{}")

    assert sink.get("result.json") == b'{"ok": true}'
    assert sink.get("checkpoint.pt") is None
    assert sink.list() == ["result.json", "resume.pt"]
    assert store.stat(f"jobs/{job_id}/result.json").size == len(b'{"ok": true}')
    assert {o.name for o in store.list_artifacts(job_id)} == {"result.json", "resume.pt"}
