"""The suites' collection upload checks that LC mode will show each document whole."""

import httpx
import pytest

from evals.api import upload_whole


def collection_server(shown: str) -> httpx.Client:
    """An HTTP client whose collection routes store one document and show it as `shown`."""

    def respond(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/documents"):
            return httpx.Response(200, json={"files": [{"name": "context.txt", "doc_id": "d1"}]})
        if request.method == "GET" and path.endswith("/documents/d1"):
            return httpx.Response(200, json={"text": shown})
        return httpx.Response(200, json={})  # the delete and the create

    return httpx.Client(transport=httpx.MockTransport(respond), base_url="http://lcrag")


def test_a_document_shown_whole_passes_and_one_that_lost_text_stops_the_eval() -> None:
    text = "The grass is green.\n\nThe sky is blue. " * 50
    upload_whole(collection_server(" ".join(text.split())), "probe", [("context.txt", text)])
    with pytest.raises(RuntimeError, match=r"LC mode shows 38 of the 1,900 characters of context.txt"):
        upload_whole(collection_server(text[:38]), "probe", [("context.txt", text)])
