// The official ollama JS client against a modelport gateway: `node client.mjs <gateway url>`.
// Prints one JSON object with what each call returned; tests/test_gateway_ollama_js.py checks it.
import { Ollama } from 'ollama'

const ollama = new Ollama({ host: process.argv[2] })
const REMOTE = 'llama3.2:latest'
const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}
const out = {}

const chat = await ollama.chat({ model: REMOTE, messages: [{ role: 'user', content: 'hello there' }], options: { num_ctx: 8192 } })
out.chat = { content: chat.message.content, done: chat.done, done_reason: chat.done_reason, eval_count: chat.eval_count }

let streamed = ''
let last = null
for await (const part of await ollama.chat({ model: REMOTE, messages: [{ role: 'user', content: 'a b c' }], stream: true })) {
  streamed += part.message.content
  last = part
}
out.stream = { content: streamed, done: last.done, eval_count: last.eval_count }

const local = await ollama.chat({ model: 'local/smollm2', messages: [{ role: 'user', content: 'Say hi' }], options: { num_predict: 5 } })
out.local = { content: local.message.content, eval_count: local.eval_count }

const generated = await ollama.generate({ model: REMOTE, prompt: 'tell me', system: 'be brief' })
out.generate = { response: generated.response, done: generated.done }

const tool = await ollama.chat({ model: REMOTE, messages: [{ role: 'user', content: 'Paris' }], tools: [WEATHER] })
out.tools = tool.message.tool_calls ?? []

const structured = await ollama.chat({ model: REMOTE, messages: [{ role: 'user', content: 'a number' }], format: { type: 'object', properties: { n: { type: 'integer' } } } })
out.structured = structured.message.content

const embedded = await ollama.embed({ model: REMOTE, input: ['one', 'two'] })
out.embed = embedded.embeddings

out.list = (await ollama.list()).models.map((m) => m.name)
out.show = (await ollama.show({ model: REMOTE })).capabilities

try {
  await ollama.chat({ model: 'mystery:7b', messages: [{ role: 'user', content: 'x' }] })
  out.error = null
} catch (error) {
  out.error = { status: error.status_code, message: error.error }
}

console.log(JSON.stringify(out))
