// The official openai npm package's Responses API against a modelport gateway.
// Usage: node responses.mjs <base_url> <model>; prints one JSON object with what it saw.
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "anything", maxRetries: 0 });

const created = await client.responses.create({ model, input: "hello from node", instructions: "be brief" });

const stream = client.responses.stream({ model, input: "streamed words" });
const events = [];
const deltas = [];
stream.on("response.output_text.delta", (event) => deltas.push(event.delta));
for await (const event of stream) events.push(event.type);
const final = await stream.finalResponse();

const retrieved = await client.responses.retrieve(created.id);

console.log(JSON.stringify({
  created: { id: created.id, status: created.status, output_text: created.output_text, usage: created.usage },
  stream: { events, deltas: deltas.join(""), final_text: final.output_text, final_status: final.status },
  retrieved_text: retrieved.output_text,
}));
