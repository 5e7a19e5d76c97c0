"""GET /v1/models is one path for three SDKs: the gateway answers each in its own shape."""

import anthropic
import openai

from modelport.server.testing import GatewayThread


def test_each_sdk_lists_the_gateway_models_in_its_own_shape():
    with GatewayThread() as gateway:
        openai_ids = [m.id for m in openai.OpenAI(base_url=gateway.url + "/v1", api_key="-").models.list()]
        anthropic_page = anthropic.Anthropic(base_url=gateway.url, api_key="-").models.list()
    assert "local/smollm2" in openai_ids
    assert [m.id for m in anthropic_page.data] == openai_ids
    assert all(m.type == "model" for m in anthropic_page.data)
