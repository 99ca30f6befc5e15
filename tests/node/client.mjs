// The official openai SDK for Node against the gateway: node client.mjs <base URL of /v1>.
// Prints one JSON object with what each call returned, for tests/e2e/test_openai_node.py.
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "user", content: "How much water should I drink each day?" }];
const out = {};

out.models = (await client.models.list()).data.map((m) => m.id);
out.retrieved = (await client.models.retrieve("llama-2-7b-chat")).id;
try {
  await client.models.retrieve("gpt-4o");
} catch (error) {
  out.unknown = { status: error.status, code: error.code };
}
const completion = await client.chat.completions.create({ model: "llama-2-7b-chat", messages });
out.completion = completion.choices[0].message.content;
out.usage = completion.usage;
const stream = await client.chat.completions.create({
  model: "llama-2-7b-chat",
  messages,
  stream: true,
  stream_options: { include_usage: true },
});
let streamed = "";
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) out.streamUsage = chunk.usage;
}
out.streamed = streamed;
try {
  await client.chat.completions.create({
    model: "llama-2-7b-chat",
    messages,
    response_format: { type: "json_object" },
  });
} catch (error) {
  out.refused = { status: error.status, code: error.code, param: error.param };
}
console.log(JSON.stringify(out));
