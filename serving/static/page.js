// The try-it page: type a text, pick the method and options, watch the output stream in, see the n-best
// list and the cross-attention. One page and one attention drawing over a back end that generates:
// `ServerBackend` talks to the HTTP API of `python -m serving.server`; `WebBackend` (web_backend.js) runs the
// export in the page with onnxruntime-web, where `python -m serving.page_server` hands out its files. Both
// offer the same three methods (describe, requestSchema, generate).

// Request fields that are not decoding options (the form sets them itself).
const NOT_OPTIONS = new Set(["inputs", "method", "return_tokens", "return_attention",
                             "return_attention_heads"]);

/** One server-sent event block ("event: NAME\ndata: JSON") as {name, data}. */
export function parseEvent(block) {
  const event = { name: "message", data: null };
  for (const line of block.split("\n")) {
    const colon = line.indexOf(": ");
    if (line.startsWith("event: ")) event.name = line.slice(7);
    else if (line.startsWith("data: ")) event.data = JSON.parse(line.slice(colon + 2));
  }
  return event;
}

export class ServerBackend {
  /** The model's facts (GET /readyz): task, model, family, lengths, providers, has_attention. */
  async describe() {
    const response = await fetch("readyz");
    const body = await response.json();
    if (!response.ok) throw new Error(body.error);
    return body;
  }

  /** The decoding options as the request schema names them (from DecodingOptions, via OpenAPI). */
  async requestSchema() {
    const spec = await (await fetch("openapi.json")).json();
    return spec.paths["/v1/generate"].post.requestBody.content["application/json"].schema.properties;
  }

  /** Yields the stream's events ({name: "token" | "done" | "end", data}); throws the server's message. */
  async *generate(body, signal) {
    const response = await fetch("v1/generate_stream", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
      throw new Error(answer.error);
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const event = parseEvent(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (event.name === "error") throw new Error(event.data.error);
        yield event;
      }
    }
  }
}

// The form ------------------------------------------------------------------------------------------------

function schemaType(property) {
  const types = property.anyOf ? property.anyOf.map((t) => t.type) : [property.type];
  return types.find((t) => t !== "null") || "string";
}

function buildOptions(schema, container, methodSelect) {
  for (const method of schema.method.enum) methodSelect.add(new Option(method, method));
  methodSelect.value = schema.method.default;
  for (const [name, property] of Object.entries(schema)) {
    if (NOT_OPTIONS.has(name)) continue;
    const label = document.createElement("label");
    label.title = property.description || "";
    const input = document.createElement("input");
    input.id = `option-${name}`;
    input.dataset.name = name;
    input.dataset.type = schemaType(property);
    input.type = input.dataset.type === "string" ? "text" : "number";
    if (input.dataset.type === "number") input.step = "any";
    input.placeholder = property.default === null || property.default === undefined ? "default" : String(property.default);
    label.append(`${name}`, input);
    container.append(label);
  }
}

/** The request body: the text, the method, and every option the user filled in (typed as the schema says). */
function requestBody(form, facts) {
  const body = { inputs: form.source.value, method: form.method.value };
  for (const input of form.options.querySelectorAll("input")) {
    if (input.value.trim() === "") continue;
    const { name, type } = input.dataset;
    body[name] = type === "integer" ? Number.parseInt(input.value, 10)
      : type === "number" ? Number.parseFloat(input.value) : input.value;
  }
  if (facts.has_attention) {
    body.return_attention = true;
    body.return_attention_heads = facts.family === "transformer";
  }
  return body;
}

// The attention drawing ------------------------------------------------------------------------------------

/** The weight matrices the view can show: the last layer's mean over heads, then each layer and head. */
function attentionViews(done) {
  const views = [];
  if (done.attention) views.push({ label: "last layer, mean over heads", weights: done.attention });
  (done.attention_heads || []).forEach((layer, l) => layer.forEach((head, h) => {
    views.push({ label: `layer ${l + 1}, head ${h + 1}`, weights: head });
  }));
  return views;
}

export function drawHeatmap(container, weights, rowLabels, columnLabels) {
  container.replaceChildren();
  container.style.gridTemplateColumns = `auto repeat(${columnLabels.length}, minmax(1.6rem, 1fr))`;
  container.dataset.rows = String(weights.length);
  container.dataset.columns = String(columnLabels.length);
  container.append(document.createElement("span"));
  for (const label of columnLabels) {
    const cell = Object.assign(document.createElement("span"), { className: "label source-label", textContent: label });
    container.append(cell);
  }
  const largest = Math.max(1e-9, ...weights.flat());
  weights.forEach((row, r) => {
    container.append(Object.assign(document.createElement("span"), { className: "label", textContent: rowLabels[r] }));
    row.forEach((weight, c) => {
      const cell = document.createElement("div");
      cell.className = "cell";
      cell.dataset.row = String(r);
      cell.dataset.column = String(c);
      cell.title = `${rowLabels[r]} → ${columnLabels[c]}: ${weight.toFixed(3)}`;
      cell.style.background = `rgba(20, 60, 160, ${(weight / largest).toFixed(3)})`;
      container.append(cell);
    });
  });
}

// The page -------------------------------------------------------------------------------------------------

export async function start(backend = new ServerBackend()) {
  const form = {
    element: document.getElementById("request"), source: document.getElementById("source"),
    method: document.getElementById("method"), options: document.getElementById("options"),
    button: document.getElementById("generate"),
  };
  const output = document.getElementById("output");
  const score = document.getElementById("score");
  const nbest = document.getElementById("nbest");
  const error = document.getElementById("error");
  const view = document.getElementById("attention-view");
  const heatmap = document.getElementById("heatmap");
  const showError = (message) => { error.textContent = message; error.hidden = false; };

  let facts;
  try {
    facts = await backend.describe();
    buildOptions(await backend.requestSchema(), form.options, form.method);
  } catch (e) {
    showError(`cannot reach the model: ${e.message}`);
    return;
  }
  document.getElementById("model-facts").textContent = `${facts.model} (${facts.family}) on the ${facts.task} task · `
    + `inputs up to ${facts.max_source_length} tokens, outputs up to ${facts.max_target_length} · `
    + `${facts.vocab_size} pieces · ${facts.providers.join(", ")}${facts.int8 ? " · int8" : ""}`;
  if (!facts.has_attention) heatmap.replaceChildren("This model has no attention (a plain seq2seq).");

  let running = null;
  let views = [];
  view.addEventListener("change", () => {
    const chosen = views[Number(view.value)];
    if (chosen) drawHeatmap(heatmap, chosen.weights, chosen.rows, chosen.columns);
  });

  form.element.addEventListener("submit", async (event) => {
    event.preventDefault();
    running?.abort();  // a new request replaces the one under way
    running = new AbortController();
    error.hidden = true;
    output.textContent = "";
    score.textContent = "";
    nbest.replaceChildren();
    form.element.dataset.state = "running";
    try {
      for await (const { name, data } of backend.generate(requestBody(form, facts), running.signal)) {
        if (name === "token") output.textContent += data.text;
        if (name !== "done") continue;
        output.textContent = data.text;
        if (data.score !== undefined) score.textContent = `score ${data.score.toFixed(4)}`;
        for (const hypothesis of data.hypotheses || []) {
          const item = document.createElement("li");
          item.append(Object.assign(document.createElement("span"), { className: "text", textContent: hypothesis.text }),
                      Object.assign(document.createElement("span"), { className: "score",
                                                                      textContent: hypothesis.score.toFixed(4) }));
          nbest.append(item);
        }
        views = attentionViews(data).map((v) => ({ ...v, rows: data.tokens, columns: data.source_tokens }));
        view.replaceChildren(...views.map((v, i) => new Option(v.label, String(i))));
        if (views.length) drawHeatmap(heatmap, views[0].weights, data.tokens, data.source_tokens);
      }
      form.element.dataset.state = "done";
    } catch (e) {
      if (e.name === "AbortError") return;
      showError(e.message);
      form.element.dataset.state = "error";
    }
  });
  form.element.dataset.state = "ready";
}

/**
 * The back end for where the page is served from: `?backend=web` or `?backend=server` when given; else
 * the export in the page where the server hands out `export/config.json` (the page server does, the
 * API server does not), else the API server.
 */
export async function defaultBackend() {
  let choice = new URLSearchParams(location.search).get("backend");
  if (!choice) {
    const probe = await fetch("export/config.json", { method: "HEAD" }).catch(() => null);
    choice = probe?.ok ? "web" : "server";
  }
  if (choice !== "web") return new ServerBackend();
  const [ort, { WebBackend }] = await Promise.all([import("/ort/ort.wasm.min.mjs"), import("./web_backend.js")]);
  ort.env.wasm.wasmPaths = "/ort/";
  // One thread, as the Python runtime's default: small models gain little from more, and one needs no
  // SharedArrayBuffer (cross-origin isolation).
  ort.env.wasm.numThreads = 1;
  return WebBackend.load(ort, new URL("export/", location.href).href);
}

if (typeof document !== "undefined" && document.getElementById("request")) {
  defaultBackend().then((backend) => start(backend), (e) => {
    const error = document.getElementById("error");
    error.textContent = `cannot load the model in the page: ${e.message}`;
    error.hidden = false;
  });
}
