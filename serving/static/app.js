// Demo store front for the RetailReco lookup service. Plain DOM, no framework:
// every value from the API is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

/** GET a JSON endpoint; throw an Error carrying the API's own message on failure. */
async function getJSON(url) {
  const res = await fetch(url, { headers: { Accept: "application/json" } });
  let body = {};
  try { body = await res.json(); } catch (_) { /* not JSON: keep the status */ }
  if (!res.ok) {
    let msg = `HTTP ${res.status}`;
    if (typeof body.detail === "string") msg = body.detail;
    else if (Array.isArray(body.detail)) msg = body.detail.map((d) => d.msg).join("; ");
    throw new Error(msg);
  }
  return body;
}

/**
 * Tell the service what the customer did with an item (POST /v1/events), echoing the request_id of
 * the answer that showed it, so the click is attributed to that list. Fire and forget: the page
 * never waits on it, and a failed report is only logged.
 */
function sendEvent(type, userId, itemId, requestId) {
  if (!userId) return;
  const body = { type, user_id: userId, item_id: itemId, time: new Date().toISOString() };
  if (requestId) body.request_id = requestId;
  fetch("/v1/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    keepalive: true, // still sent when the click navigates away
  }).then((res) => {
    if (!res.ok) console.warn(`event not recorded: HTTP ${res.status}`);
  }).catch((err) => console.warn(`event not recorded: ${err}`));
}

// the customer whose page this is, and the request id of each list shown (sent back with clicks)
const shown = { customer: null };

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function formatPrice(price) {
  return typeof price === "number" ? price.toFixed(2) : "price n/a";
}

/** One product card of a list answered under `requestId`; clicking it (or Enter/Space) reports the
 * click and loads its similar items. */
function card(product, requestId) {
  const node = el("article", "card");
  node.dataset.itemId = product.item_id;
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.setAttribute("aria-label", `${product.title || product.item_id}: show similar items`);

  const top = el("div", "card-top");
  top.append(el("span", "rank", `#${product.rank}`), el("span", `tag tag-${product.tag}`, product.tag));
  node.append(
    top,
    el("h3", "title", product.title || product.item_id),
    el("p", "category", product.category || "uncategorised"),
    el("p", "price", formatPrice(product.price)),
    el("p", "item-id muted", product.item_id),
  );
  const open = () => {
    sendEvent("click", shown.customer, product.item_id, requestId);
    loadSimilar(product.item_id, product.title || product.item_id);
  };
  node.addEventListener("click", open);
  node.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
  });
  return node;
}

function render(container, products, requestId) {
  container.replaceChildren(...products.map((p) => card(p, requestId)));
  if (!products.length) container.append(el("p", "muted", "No items."));
}

async function loadRecommendations(customerId, segment) {
  showError(null);
  $("similar-section").hidden = true;
  const params = new URLSearchParams({ k: "12" });
  if (segment) params.set("segment", segment);
  const url = `/v1/users/${encodeURIComponent(customerId)}/recommendations?${params}`;
  try {
    const data = await getJSON(url);
    $("customer-label").textContent = data.user_id;
    shown.customer = data.user_id;
    const source = $("source");
    source.textContent = data.fallback ? `fallback: ${data.source}` : data.source;
    source.classList.toggle("fallback", data.fallback);
    $("version").textContent = `version ${data.version}`;
    render($("recs"), data.items, data.request_id);
    $("recs-section").hidden = false;
  } catch (err) {
    $("recs-section").hidden = true;
    showError(err);
  }
}

async function loadSimilar(itemId, label) {
  showError(null);
  try {
    const data = await getJSON(`/v1/items/${encodeURIComponent(itemId)}/similar?k=8`);
    $("similar-label").textContent = label;
    render($("similar"), data.items, data.request_id);
    const section = $("similar-section");
    section.hidden = false;
    section.scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (err) {
    showError(err);
  }
}

async function randomCustomer() {
  showError(null);
  try {
    const data = await getJSON("/v1/demo/users?n=10");
    // demo ids come from the synthetic data's id space only, never from real customers
    if (!data.user_ids.length) throw new Error("no synthetic demo customers in the published version (real data is never listed)");
    const pick = data.user_ids[Math.floor(Math.random() * data.user_ids.length)];
    $("customer-id").value = pick;
    await loadRecommendations(pick, $("segment").value.trim());
  } catch (err) {
    showError(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("customer-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("customer-id").value.trim();
    if (id) loadRecommendations(id, $("segment").value.trim());
  });
  $("random").addEventListener("click", randomCustomer);
});
