// dispatchd web console: plain JavaScript served by the daemon, no build step.
//
// Log-in gives a session token (kept in sessionStorage, so closing the tab logs
// out); every view is then fed by the REST API and kept live by the /events
// WebSocket, which reconnects with back-off and reloads state after a gap.
"use strict";

const I18N = {
  zh: {
    offline: "未连接", online: "实时", logout: "退出", login_title: "登录", username: "用户名",
    password: "密码", login: "登录", services: "服务状态", service: "服务", state: "状态",
    required: "必需", last_error: "最近错误", duty_log: "值班记录", duty_placeholder: "记录内容…",
    add_entry: "添加记录", events: "实时事件", yes: "是", no: "否",
    running: "运行中", failed: "故障", starting: "启动中", stopping: "停止中", stopped: "已停止",
    pending: "等待",
    new_report: "接警登记", report_placeholder: "报警内容（边输入边分类）…", caller: "报警电话",
    lat: "纬度", lon: "经度", submit_report: "提交", incidents: "事件", reports_n: "条报告", report_1: "条报告",
    natural_disaster: "自然灾害", accident: "事故灾难", public_health: "公共卫生事件",
    social_security: "社会安全事件", unclassified: "未分类", needs_location: "待定位",
    saved_in: "已登记，归入事件",
    broadcasts: "预警短信", approve: "批准发送", cancel: "取消", pending_approval: "待批准",
    sending: "发送中", completed: "已完成", cancelled: "已取消", recipients_n: "人",
    map: "态势图", map_empty: "暂无辖区边界或带坐标的事件",
    view_taker: "接警", view_dispatcher: "调度", view_supervisor: "班长席", view_command: "指挥",
    incident_detail: "事件详情", recommend_units: "推荐力量", assign: "一键派遣", note_placeholder: "备注…",
    add_note: "添加备注", timeline: "处置过程", proposed_actions: "预案待确认", units: "力量",
    unit: "单位", type: "类型", agency: "部门", incident: "事件", confirm: "确认", reject: "驳回",
    new: "新建", acknowledged: "已受理", dispatched: "已派遣", on_scene: "已到场", contained: "已控制",
    closed: "已结案", merged: "已合并", available: "待命", en_route: "途中", returning: "返回",
    out_of_service: "停用", step_to: "→", reason_prompt: "请说明原因", no_units: "没有可用的力量",
    conferences: "会商与通话", open_conference: "发起会商", conf_name: "会商名称",
    participants: "参加方（账号、号码或 SIP 地址，逗号分隔）", add_party: "加入", target: "对象",
    lock: "锁定", unlock: "解锁", end_conference: "结束", mute: "闭麦", unmute: "开麦",
    deafen: "静听", undeafen: "恢复收听", drop: "移出", locked: "已锁定", no_conferences: "没有进行中的会商或通话",
    kind_call: "通话", kind_conference: "会商", role: "角色", patch: "接入", unpatch: "断开接入",
    patched_to: "已接入", patch_target: "接入到", end_reason: "结束原因",
    link_up: "在线", link_down: "离线", creg_0: "未注册", creg_1: "已注册", creg_2: "搜索网络",
    creg_3: "注册被拒", creg_4: "未知", creg_5: "漫游", satphone: "卫星电话", satphones: "卫星电话", signal: "信号", registration: "注册", call_state: "通话",
    dial: "拨打", answer: "接听", answer_into: "接入会商", new_conference: "新会商", hang_up: "挂断", send_sms: "发短信", number: "号码", sms_text: "短信内容",
    talkgroups: "通话组", talkgroup: "通话组", talker: "讲话人", queue: "排队", ptt: "按下讲话",
    ptt_release: "松开", composer: "预警短信编辑", composer_help: "在态势图上点击画出范围，选择模板，预览人数后提交审批。",
    draw_area: "画范围", clear_area: "清除", finish_area: "完成", title: "标题", preview_count: "预览人数",
    request_approval: "提交审批", reach_n: "将发送给", area_points: "个点", no_area: "请先在态势图上画出范围",
    live_calls: "来电与通话", hotline: "号码", agent: "接警员", waited: "时长", queues: "队列",
    waiting: "排队", longest: "最长等待", answered: "已接", abandoned: "放弃", agents_ready: "空闲席位",
    release: "强拆", release_reason: "强拆原因", queued: "排队中", ringing: "振铃", talking: "通话中",
    describing_call: "正在登记来电", agents: "接警席位", ready: "空闲", not_ready: "示忙", busy: "忙",
    wrap_up: "话后处理", logged_out: "未签入", connected: "通话中", login_agent: "签入",
    logout_agent: "签出", my_phone: "我的话机", listen: "监听", whisper: "密语", barge: "强插",
    leave: "退出", merge_here: "并入本事件", same_event: "同一事件：",
    split_out: "拆分为新事件", split_help: "勾选不属于本事件的报警，拆分为新事件",
  },
  en: {
    offline: "offline", online: "live", logout: "Log out", login_title: "Log in", username: "User name",
    password: "Password", login: "Log in", services: "Services", service: "Service", state: "State",
    required: "Required", last_error: "Last error", duty_log: "Duty log", duty_placeholder: "Entry…",
    add_entry: "Add entry", events: "Live events", yes: "yes", no: "no",
    running: "running", failed: "failed", starting: "starting", stopping: "stopping", stopped: "stopped",
    pending: "pending",
    new_report: "New report", report_placeholder: "What the caller says (classified as you type)…",
    caller: "Caller number", lat: "Latitude", lon: "Longitude", submit_report: "Submit",
    incidents: "Incidents", reports_n: "reports", report_1: "report", natural_disaster: "Natural disaster",
    accident: "Accident", public_health: "Public health", social_security: "Social security",
    unclassified: "Unclassified", needs_location: "needs location", saved_in: "Saved in incident",
    broadcasts: "Broadcasts", approve: "Approve", cancel: "Cancel",
    pending_approval: "awaiting approval", sending: "sending", completed: "completed",
    cancelled: "cancelled", recipients_n: "recipients",
    map: "Map", map_empty: "No district boundaries or located incidents yet",
    view_taker: "Call taker", view_dispatcher: "Dispatcher", view_supervisor: "Supervisor",
    view_command: "Command",
    incident_detail: "Incident", recommend_units: "Recommend units", assign: "Assign",
    note_placeholder: "Note…", add_note: "Add note", timeline: "Timeline",
    proposed_actions: "Plan actions to confirm", units: "Units", unit: "Unit", type: "Type",
    agency: "Agency", incident: "Incident", confirm: "Confirm", reject: "Reject", new: "new",
    acknowledged: "acknowledged", dispatched: "dispatched", on_scene: "on scene",
    contained: "contained", closed: "closed", merged: "merged", available: "available",
    en_route: "en route", returning: "returning", out_of_service: "out of service", step_to: "→",
    reason_prompt: "Why?", no_units: "No available units", talkgroups: "Talkgroups",
    conferences: "Conferences and calls", open_conference: "Open a conference", conf_name: "Name",
    participants: "Participants (accounts, numbers or SIP URIs, comma-separated)", add_party: "Add",
    target: "Who", lock: "Lock", unlock: "Unlock", end_conference: "End", mute: "Mute", unmute: "Unmute",
    deafen: "Deafen", undeafen: "Undeafen", drop: "Drop", locked: "locked", no_conferences: "No conferences or calls",
    kind_call: "call", kind_conference: "conference", role: "Role", patch: "Patch", unpatch: "Unpatch",
    patched_to: "patched to", patch_target: "Patch into", end_reason: "Why end it?",
    link_up: "up", link_down: "down", creg_0: "not registered", creg_1: "registered",
    creg_2: "searching", creg_3: "denied", creg_4: "unknown", creg_5: "roaming", satphone: "Satphone", satphones: "Satellite phones", signal: "Signal", registration: "Registration", call_state: "Call",
    dial: "Dial", answer: "Answer", answer_into: "Answer into conference", new_conference: "New conference", hang_up: "Hang up", send_sms: "Send SMS", number: "Number", sms_text: "SMS text",
    talkgroup: "Talkgroup", talker: "Talking", queue: "Queue", ptt: "Push to talk", ptt_release: "Release",
    composer: "Broadcast composer",
    composer_help: "Click on the map to draw the area, pick a template, preview the count, then request approval.",
    draw_area: "Draw area", clear_area: "Clear", finish_area: "Finish", title: "Title",
    preview_count: "Preview count", request_approval: "Request approval", reach_n: "Reaches",
    area_points: "points", no_area: "Draw the area on the map first", live_calls: "Calls",
    hotline: "Hotline", agent: "Call taker", waited: "Time", queues: "Queues", waiting: "Waiting",
    longest: "Longest wait", answered: "Answered", abandoned: "Abandoned", agents_ready: "Ready",
    release: "Force release", release_reason: "Reason for the forced release", queued: "queued",
    ringing: "ringing", talking: "talking", describing_call: "Describing the call from",
    listen: "Listen", whisper: "Whisper", barge: "Barge", leave: "Leave",
    my_phone: "My phone (SIP account)", agents: "Call takers", logged_out: "logged out",
    ready: "ready", not_ready: "not ready", busy: "busy", wrap_up: "wrap-up", login_agent: "Log in",
    logout_agent: "Log out", merge_here: "Merge into this incident", same_event: "Same event:",
    split_out: "Split into a new incident", split_help: "Tick the reports that belong to another event",
    connected: "connected",
  },
};

const $ = (sel) => document.querySelector(sel);
let lang = localStorage.getItem("dispatchd.lang") || (navigator.language.startsWith("zh") ? "zh" : "en");
let token = sessionStorage.getItem("dispatchd.token");
let socket = null;
let retryMs = 500;
const MAX_EVENTS = 200;

function t(key) { return (I18N[lang] && I18N[lang][key]) || key; }

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  });
  document.querySelectorAll("[data-i18n-aria-label]").forEach((el) => {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  });
  $("#lang").textContent = lang === "zh" ? "EN" : "中文";
  setLive(socket && socket.readyState === WebSocket.OPEN);
}

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401 && token) { logout(); throw new Error("session expired"); }
  const body = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
      : body.detail;
    throw new Error(detail || response.statusText);
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.entries(attrs).forEach(([k, v]) => { if (k === "class") node.className = v; else node.setAttribute(k, v); });
  children.forEach((c) => node.append(c));
  return node;
}

function when(iso) { return new Date(iso).toLocaleString(lang === "zh" ? "zh-CN" : "en-GB"); }

async function loadHealth() {
  const health = await api("/health");
  $("#node").textContent = `${health.node} ${health.version}`;
  const rows = Object.entries(health.services).map(([name, s]) => el("tr", { "data-service": name },
    el("td", {}, name),
    el("td", { class: `state-${s.state}` }, t(s.state)),
    el("td", {}, s.required ? t("yes") : t("no")),
    el("td", {}, s.last_error || "")));
  $("#services tbody").replaceChildren(...rows);
}

function dutyItem(entry) {
  return el("li", { "data-id": entry.id }, el("time", {}, when(entry.at)),
            el("span", { class: "by" }, entry.author), entry.text);
}

async function loadDutyLog() {
  const rows = await api("/api/v1/duty-log?limit=100");
  $("#duty-log").replaceChildren(...rows.map(dutyItem));
}

function showEvent(envelope) {
  const line = el("li", {}, el("time", {}, new Date(envelope.at * 1000).toLocaleTimeString()),
                  `${envelope.topic} ${JSON.stringify(envelope.data)}`);
  const list = $("#events");
  list.prepend(line);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function gradeBadge(grade, colour) {
  return el("span", { class: `grade ${colour}` }, grade);
}

function incidentItem(inc) {
  const item = el("li", { "data-incident": inc.id, class: inc.id === selectedIncident ? "selected" : "" },
    gradeBadge(inc.grade, inc.colour),
    el("span", { class: "status" }, t(inc.status)),
    el("strong", {}, t(inc.category || "unclassified")), " ",
    inc.subtype ? el("span", { class: "tag" }, inc.subtype) : "",
    ...inc.agencies.map((a) => el("span", { class: "tag" }, a)),
    ` ${inc.report_count} ${t(inc.report_count === 1 ? "report_1" : "reports_n")}`,
    inc.needs_location ? el("span", { class: "tag" }, t("needs_location")) : "");
  item.addEventListener("click", () => selectIncident(inc.id));
  return item;
}

// ---- incident detail: lifecycle steps, recommendation and assignment, notes, timeline
let selectedIncident = null;
let lastUnits = [];
// The lifecycle (dispatch/incidents.py TRANSITIONS); the server checks each step and role.
const STEPS = { new: ["acknowledged", "dispatched", "closed"], acknowledged: ["dispatched", "closed"],
  dispatched: ["on_scene", "contained"], on_scene: ["contained"], contained: ["closed"], closed: ["acknowledged"] };
const NEEDS_REASON = new Set(["new>closed", "acknowledged>closed", "closed>acknowledged"]);
const can = (perm) => me && me.permissions.includes(perm);

async function selectIncident(id) {
  selectedIncident = id;
  document.querySelectorAll("#incidents li").forEach((li) => li.classList.toggle("selected", li.dataset.incident === id));
  $("#recommendation").replaceChildren();
  $("#assign").hidden = true;
  $("#incident-error").textContent = "";
  showView(currentView());
  await loadIncidentDetail();
}

async function loadIncidentDetail() {
  if (!selectedIncident) return;
  const id = selectedIncident;
  const [inc, timeline] = await Promise.all([api(`/api/v1/incidents/${id}`),
    api(`/api/v1/incidents/${id}/timeline`)]);
  if (id !== selectedIncident) return;
  $("#incident-card").dataset.incident = id;
  $("#incident-head").replaceChildren(gradeBadge(inc.grade, inc.colour),
    el("span", { class: "status", id: "incident-status" }, t(inc.status)),
    el("strong", {}, t(inc.category || "unclassified")), " ", inc.subtype || "", " ",
    el("span", { class: "mono" }, id.slice(0, 8)));
  const steps = (STEPS[inc.status] || []).map((to) => {
    const b = el("button", { type: "button", "data-step": to }, `${t("step_to")} ${t(to)}`);
    b.addEventListener("click", () => takeStep(id, inc.status, to));
    return b;
  });
  $("#incident-steps").replaceChildren(...(can("incidents.manage") ? steps : []));
  // Attach: another open incident about the same event is merged into this one.
  const others = lastIncidents.filter((o) => o.id !== id && o.status !== "closed");
  $("#merge-box").hidden = !others.length || !can("incidents.correlate");
  $("#merge-with").replaceChildren(...others.map((o) => el("option", { value: o.id },
    `${t("same_event")} ${o.grade} ${t(o.category || "unclassified")} ${o.id.slice(0, 8)} (${o.report_count})`)));
  // Split: reports that belong to another event move out into a new incident.
  const reports = inc.reports || [];
  $("#split-box").hidden = reports.length < 2 || !can("incidents.correlate");
  $("#split-reports").replaceChildren(...reports.map((r) => el("li", { "data-report": r.id },
    el("label", {}, el("input", { type: "checkbox", value: r.id }),
      ` ${when(r.received_at)} ${r.channel} ${r.caller || ""} ${r.text.slice(0, 60)}`))));
  $("#timeline").replaceChildren(...timeline.slice().reverse().map((e) => el("li", {},
    el("time", {}, when(e.at)), el("span", { class: "by" }, e.actor || ""),
    e.kind === "note" ? e.text : e.kind === "link" ? `${e.link_kind} ${e.ref}` : e.action)));
}

async function takeStep(id, from, to) {
  const body = { to };
  if (NEEDS_REASON.has(`${from}>${to}`)) {
    const reason = window.prompt(t("reason_prompt"));
    if (!reason) return;
    body.reason = reason;
  }
  $("#incident-error").textContent = "";
  try {
    await api(`/api/v1/incidents/${id}/transition`, { method: "POST", body: JSON.stringify(body) });
    await loadIncidentDetail();
  } catch (err) { $("#incident-error").textContent = err.message; }
}

async function recommend() {
  const id = selectedIncident;
  $("#incident-error").textContent = "";
  try {
    const rec = await api(`/api/v1/incidents/${id}/recommendation`);
    const items = rec.units.map((u) => el("li", { "data-unit": u.unit_id },
      el("label", {}, el("input", { type: "checkbox", checked: "", value: u.unit_id }),
        ` ${u.name} (${u.type}, ${u.distance_km} km)`), el("div", { class: "by" }, u.reason)));
    $("#recommendation").replaceChildren(...(items.length ? items : [el("li", {}, t("no_units"))]));
    $("#assign").hidden = !items.length || !can("units.dispatch");
  } catch (err) { $("#incident-error").textContent = err.message; }
}

async function assign() {
  const ids = [...document.querySelectorAll("#recommendation input:checked")].map((i) => i.value);
  if (!ids.length) return;
  $("#incident-error").textContent = "";
  try {
    await api(`/api/v1/incidents/${selectedIncident}/assign`, { method: "POST", body: JSON.stringify({ unit_ids: ids }) });
    $("#recommendation").replaceChildren();
    $("#assign").hidden = true;
    await Promise.all([loadIncidentDetail(), loadUnits()]);
  } catch (err) { $("#incident-error").textContent = err.message; }
}

async function loadUnits() {
  if (!can("units.read")) return;
  lastUnits = await api("/api/v1/units");
  $("#units tbody").replaceChildren(...lastUnits.map((u) => el("tr", { "data-unit": u.id },
    el("td", {}, u.name), el("td", {}, u.type), el("td", {}, u.agency),
    el("td", { class: `unit-${u.status}` }, t(u.status)),
    el("td", { class: "mono" }, u.incident_id ? u.incident_id.slice(0, 8) : ""))));
  drawMap();
}

// ---- calls and queues: the call taker's incoming queue, the supervisor's live calls
let myCall = null;
const monitoring = {};  // call id -> {leg, mode}: the calls this supervisor forced into

async function forceIn(callId, mode) {
  $("#calls-error").textContent = "";
  const account = $("#my-phone").value.trim() || me.name;
  localStorage.setItem("dispatchd.sip_account", account);
  try {
    const mine = monitoring[callId];
    if (mine) {
      await api(`/api/v1/calls/${callId}/monitor/${encodeURIComponent(mine.leg)}`,
        { method: "PATCH", body: JSON.stringify({ mode }) });
      mine.mode = mode;
    } else {
      const got = await api(`/api/v1/calls/${callId}/monitor`, { method: "POST", body: JSON.stringify({ mode, account }) });
      monitoring[callId] = { leg: got.leg, mode };
    }
  } catch (err) { $("#calls-error").textContent = err.message; }
  await loadCalls();
}

async function leaveCall(callId) {
  const mine = monitoring[callId];
  if (!mine) return;
  try {
    await api(`/api/v1/calls/${callId}/monitor/${encodeURIComponent(mine.leg)}`, { method: "DELETE" });
  } catch (err) { $("#calls-error").textContent = err.message; }
  delete monitoring[callId];
  await loadCalls();
}
function seconds(s) { const m = Math.floor(s / 60); return `${m}:${String(Math.floor(s % 60)).padStart(2, "0")}`; }
async function loadCalls() {
  if (!can("calls.read")) return;
  const [calls, queues] = await Promise.all([api("/api/v1/calls"), api("/api/v1/queues")]);
  calls.sort((a, b) => a.priority - b.priority || b.age_s - a.age_s);
  // The call taker's own connected call: the report form describes it (its voice report).
  myCall = calls.find((c) => me && c.agent_id === me.name && c.state === "connected") || null;
  $("#current-call").hidden = !myCall;
  $("#current-call").textContent = myCall ? `${t("describing_call")} ${myCall.caller} → ${myCall.hotline}` : "";
  $("#calls tbody").replaceChildren(...calls.map((c) => {
    const cells = [el("td", {}, c.caller), el("td", {}, c.hotline), el("td", { class: "call-state" }, t(c.state)),
      el("td", {}, c.agent_id || (c.ringing || []).join(", ")), el("td", {}, seconds(c.age_s))];
    const action = el("td", {});
    if (can("calls.supervise") && c.state === "connected") {
      // 强插: ring the supervisor's own phone into the call; later clicks switch the mode.
      for (const mode of ["listen", "whisper", "barge"]) {
        const m = el("button", { type: "button", class: `monitor ${mode}`,
          "aria-pressed": String(monitoring[c.call_id]?.mode === mode) }, t(mode));
        m.addEventListener("click", () => forceIn(c.call_id, mode));
        action.append(m);
      }
      if (monitoring[c.call_id]) {
        const l = el("button", { type: "button", class: "monitor leave" }, t("leave"));
        l.addEventListener("click", () => leaveCall(c.call_id));
        action.append(l);
      }
    }
    if (can("calls.supervise")) {
      const b = el("button", { type: "button", class: "release" }, t("release"));
      b.addEventListener("click", async () => {
        const reason = window.prompt(t("release_reason"));
        if (!reason) return;
        $("#calls-error").textContent = "";
        try {
          await api(`/api/v1/calls/${c.call_id}/release`, { method: "POST", body: JSON.stringify({ reason }) });
          await loadCalls();
        } catch (err) { $("#calls-error").textContent = err.message; }
      });
      action.append(b);
    }
    return el("tr", { "data-call": c.call_id }, ...cells, action);
  }));
  const agents = await api("/api/v1/agents");
  $("#agents tbody").replaceChildren(...agents.map((a) => {
    const actions = el("td", {});
    const mine = me && a.agent_id === me.name;
    if (can("calls.supervise") || mine) {
      const choices = a.state === "logged_out" ? ["login"] : a.state === "not_ready" ? ["ready", "logout"]
        : a.state === "ready" ? ["not_ready", "logout"] : [];
      for (const act of choices) {
        const b = el("button", { type: "button", class: `agent-${act}` },
          t(act === "login" ? "login_agent" : act === "logout" ? "logout_agent" : act));
        b.addEventListener("click", async () => {
          $("#calls-error").textContent = "";
          try { await api(`/api/v1/agents/${encodeURIComponent(a.agent_id)}/${act}`, { method: "POST" }); }
          catch (err) { $("#calls-error").textContent = err.message; }
          await loadCalls();
        });
        actions.append(b);
      }
    }
    return el("tr", { "data-agent": a.agent_id }, el("td", {}, a.agent_id),
      el("td", { class: `agent-state ${a.state}` }, t(a.state)), el("td", {}, seconds(a.for_s)), actions);
  }));
  $("#queues tbody").replaceChildren(...queues.map((q) => el("tr", { "data-queue": q.queue },
    el("td", {}, q.queue), el("td", {}, String(q.waiting)), el("td", {}, seconds(q.longest_wait)),
    el("td", {}, String(q.answered)), el("td", {}, String(q.abandoned)),
    el("td", {}, String((q.agents || {}).ready || 0)))));
}
setInterval(() => { if (token && me && can("calls.read") && !$("#calls-card").hidden) loadCalls().catch(() => {}); }, 2000);

// ---- talkgroups: who talks, who waits, a PTT button per group (press to key, press to release)
let lastTalkgroups = [];
async function loadTalkgroups() {
  if (!can("radio.read")) return;
  try { lastTalkgroups = await api("/api/v1/radio/talkgroups"); } catch (err) { lastTalkgroups = []; return; }
  $("#talkgroups tbody").replaceChildren(...lastTalkgroups.map((g) => {
    const mine = me && g.talker === me.name;
    const queued = me && g.queue.some((q) => (q.who || q) === me.name);
    const button = el("button", { type: "button", class: "ptt", "aria-pressed": String(Boolean(mine || queued)) },
      mine || queued ? t("ptt_release") : t("ptt"));
    button.disabled = g.monitor_only || !can("radio.ptt");
    button.addEventListener("click", () => ptt(g.name, mine || queued));
    return el("tr", { "data-talkgroup": g.name, class: g.keyed ? "keyed" : "" },
      el("td", {}, g.name), el("td", { class: "talker" }, g.talker || g.on_air || ""),
      el("td", {}, g.queue.map((q) => q.who || q).join(", ")), el("td", {}, button), el("td", { class: "patch" }));
  }));
  await loadPatches();
}

async function ptt(name, release) {
  $("#radio-error").textContent = "";
  try {
    const got = await api(`/api/v1/radio/talkgroups/${encodeURIComponent(name)}/ptt`, { method: release ? "DELETE" : "POST" });
    // A press may be queued behind a higher priority or denied (the group needs a commander).
    const said = (got.events || []).find((e) => e.event === "denied" || e.event === "queued");
    if (said) $("#radio-error").textContent = `${name}: ${said.event} (${said.why})`;
  } catch (err) { $("#radio-error").textContent = err.message; }
  await loadTalkgroups();
}

// ---- conferences: every open conference and connected call, with its legs; dial out,
// mute, deafen, drop, lock, end; talkgroups are patched into them from the talkgroup panel.
let lastConferences = [];
async function loadConferences() {
  if (!can("calls.read")) return;
  try { lastConferences = await api("/api/v1/conferences"); } catch (err) { lastConferences = []; }
  const manage = can("conferences.manage");
  $("#conference-form").hidden = !manage;
  const blocks = lastConferences.map((c) => {
    const head = el("div", { class: "row conf-head" },
      el("strong", {}, c.name || c.id.slice(0, 8)), " ", el("span", { class: "muted" }, t(`kind_${c.kind}`)),
      c.locked ? el("span", { class: "badge locked" }, t("locked")) : "");
    const rows = c.legs.map((leg) => {
      const cells = [el("td", {}, leg.target), el("td", {}, leg.role),
        el("td", { class: "leg-flags" }, [leg.mode !== "talk" ? leg.mode : "", leg.muted ? t("mute") : "",
          leg.deafened ? t("deafen") : ""].filter(Boolean).join(" "))];
      const actions = el("td", {});
      if (manage) {
        const flip = (field, on, off) => {
          const b = el("button", { type: "button", class: `leg-${field}` }, leg[field] ? t(off) : t(on));
          b.addEventListener("click", () => confAction(`/api/v1/conferences/${c.id}/legs/${encodeURIComponent(leg.leg)}`,
            "PATCH", { [field]: !leg[field] }));
          return b;
        };
        actions.append(flip("muted", "mute", "unmute"), flip("deafened", "deafen", "undeafen"));
        const drop = el("button", { type: "button", class: "leg-drop" }, t("drop"));
        drop.addEventListener("click", () => confAction(
          `/api/v1/conferences/${c.id}/legs/${encodeURIComponent(leg.leg)}?reason=${encodeURIComponent("console")}`, "DELETE"));
        actions.append(drop);
      }
      return el("tr", { "data-leg": leg.leg, "data-target": leg.target }, ...cells, actions);
    });
    const table = el("table", { class: "legs" }, el("thead", {}, el("tr", {}, el("th", {}, t("target")),
      el("th", {}, t("role")), el("th", {}, ""), el("th", {}, ""))), el("tbody", {}, ...rows));
    const block = el("div", { class: "conference", "data-conference": c.id }, head, table);
    if (manage) {
      const add = el("input", { class: "add-target", maxlength: "255", placeholder: t("target") });
      const addButton = el("button", { type: "button", class: "add-party" }, t("add_party"));
      addButton.addEventListener("click", () => add.value.trim() && confAction(
        `/api/v1/conferences/${c.id}/legs`, "POST", { target: add.value.trim(), reason: "console" }));
      const lock = el("button", { type: "button", class: "lock" }, c.locked ? t("unlock") : t("lock"));
      lock.addEventListener("click", () => confAction(`/api/v1/conferences/${c.id}`, "PATCH", { locked: !c.locked }));
      const end = el("button", { type: "button", class: "end" }, t("end_conference"));
      end.addEventListener("click", () => {
        const reason = window.prompt(t("end_reason"));
        if (reason) confAction(`/api/v1/conferences/${c.id}?reason=${encodeURIComponent(reason)}`, "DELETE");
      });
      block.append(el("div", { class: "row" }, add, addButton, lock, end));
    }
    return block;
  });
  $("#conferences").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted" }, t("no_conferences"))]));
  fillPatchTargets();
}

async function confAction(path, method, body) {
  $("#conference-error").textContent = "";
  try { await api(path, { method, body: body ? JSON.stringify(body) : undefined }); }
  catch (err) { $("#conference-error").textContent = err.message; }
  await loadConferences();
}

$("#conference-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const participants = form.participants.value.split(/[,，\s]+/).map((x) => x.trim()).filter(Boolean);
  const body = { name: form.conf_name.value.trim(), participants, reason: "console" };
  if (selectedIncident) body.incident_id = selectedIncident;
  $("#conference-error").textContent = "";
  try {
    await api("/api/v1/conferences", { method: "POST", body: JSON.stringify(body) });
    form.reset();
  } catch (err) { $("#conference-error").textContent = err.message; }
  await loadConferences();
});
setInterval(() => { if (token && me && can("calls.read") && !$("#conferences-card").hidden) loadConferences().catch(() => {}); }, 2000);

// ---- talkgroup patches: a group into a conference, a call or another group
let lastPatches = {};
async function loadPatches() {
  if (!can("radio.read")) return;
  try { lastPatches = await api("/api/v1/patches"); } catch (err) { lastPatches = {}; }
  document.querySelectorAll("#talkgroups tr[data-talkgroup]").forEach((row) => {
    const p = lastPatches[row.dataset.talkgroup];
    const cell = row.querySelector("td.patch");
    if (!cell) return;
    cell.replaceChildren();
    if (!p) return;
    cell.append(`${t("patched_to")} ${p.target} `);
    if (can("radio.ptt")) {
      const b = el("button", { type: "button", class: "unpatch" }, t("unpatch"));
      b.addEventListener("click", () => patchAction(row.dataset.talkgroup, null));
      cell.append(b);
    }
  });
  fillPatchTargets();
}

function fillPatchTargets() {
  const box = $("#patch-form");
  if (!box) return;
  // Only talkgroups with an audio path (a sound-card gateway) can be patched.
  const audible = lastTalkgroups.filter((g) => g.audio);
  box.hidden = !can("radio.ptt") || !audible.length;
  const group = $("#patch-group").value;
  $("#patch-group").replaceChildren(...audible.map((g) => el("option", { value: g.name }, g.name)));
  if (group) $("#patch-group").value = group;
  const target = $("#patch-target").value;
  const options = [
    ...lastConferences.map((c) => el("option", { value: `${c.kind === "call" ? "call" : "room"}:${c.id}` },
      `${t(`kind_${c.kind}`)} ${c.name || c.id.slice(0, 8)}`)),
    ...audible.map((g) => el("option", { value: `talkgroup:${g.name}` }, `${t("talkgroup")} ${g.name}`)),
  ];
  $("#patch-target").replaceChildren(...options);
  if (target) $("#patch-target").value = target;
}

async function patchAction(group, target) {
  $("#radio-error").textContent = "";
  try {
    if (target === null) {
      await api(`/api/v1/talkgroups/${encodeURIComponent(group)}/patch`, { method: "DELETE" });
    } else {
      const [kind, ...rest] = target.split(":");
      await api(`/api/v1/talkgroups/${encodeURIComponent(group)}/patch`,
        { method: "POST", body: JSON.stringify({ [kind]: rest.join(":") }) });
    }
  } catch (err) { $("#radio-error").textContent = err.message; }
  await loadPatches();
}
$("#patch").addEventListener("click", () => {
  const group = $("#patch-group").value;
  const target = $("#patch-target").value;
  if (group && target) patchAction(group, target);
});

// ---- satellite phones: link, signal, registration and call; dial, answer, hang up, SMS
let satphoneCount = 0;
async function loadSatphones() {
  if (!can("radio.read")) return;
  let gateways;
  try { gateways = await api("/api/v1/radio/gateways"); } catch (err) { return; }
  const phones = Object.entries(gateways).filter(([, g]) => g.kind === "satphone");
  if (phones.length !== satphoneCount) { satphoneCount = phones.length; showView(currentView()); }
  const picked = $("#satphone-pick").value;
  $("#satphone-pick").replaceChildren(...phones.map(([name]) => el("option", { value: name }, name)));
  if (picked) $("#satphone-pick").value = picked;
  $("#satphones tbody").replaceChildren(...phones.map(([name, g]) => {
    const call = g.call ? `${g.call.incoming ? "←" : "→"} ${g.call.number || ""} ${g.call.state}` : "";
    return el("tr", { "data-satphone": name, class: g.ready ? "" : "down" },
      el("td", {}, name), el("td", {}, g.ready ? t("link_up") : t("link_down")),
      el("td", { class: "signal" }, g.signal == null ? "" : `${g.signal}/5`),
      el("td", { class: "registration" }, g.registration == null ? "" : t(`creg_${g.registration}`)),
      el("td", { class: "call" }, call));
  }));
  $("#satphone-form").hidden = !can("radio.send");
  // Answer into a conference: the open ones (not two-party calls), or a new one.
  const conf = $("#satphone-conf"), chosen = conf.value;
  conf.replaceChildren(el("option", { value: "" }, t("new_conference")),
    ...lastConferences.filter((c) => c.kind === "conference")
      .map((c) => el("option", { value: c.id }, c.name)));
  if (chosen) conf.value = chosen;
}

async function satphoneIntoConference() {
  const name = $("#satphone-pick").value;
  if (!name) return;
  const conferenceId = $("#satphone-conf").value;
  $("#satphone-error").textContent = "";
  try {
    await api(`/api/v1/satphones/${encodeURIComponent(name)}/conference`,
      { method: "POST", body: JSON.stringify(conferenceId ? { conference_id: conferenceId } : {}) });
  } catch (err) { $("#satphone-error").textContent = err.message; }
  await loadConferences();
  await loadSatphones();
}
document.getElementById("satphone-conference").addEventListener("click", satphoneIntoConference);

async function satphoneAction(action) {
  const name = $("#satphone-pick").value;
  if (!name) return;
  const body = {};
  if (action === "dial" || action === "sms") body.number = $("#satphone-number").value.trim();
  if (action === "sms") body.text = $("#satphone-text").value;
  $("#satphone-error").textContent = "";
  try {
    await api(`/api/v1/satphones/${encodeURIComponent(name)}/${action}`,
      { method: "POST", body: JSON.stringify(body) });
    if (action === "sms") $("#satphone-text").value = "";
  } catch (err) { $("#satphone-error").textContent = err.message; }
  await loadSatphones();
}
for (const action of ["dial", "answer", "hangup", "sms"]) {
  document.getElementById(`satphone-${action}`).addEventListener("click", () => satphoneAction(action));
}

// ---- broadcast composer: area drawn on the map, template, preview count, approval request
let templates = [];
async function loadTemplates() {
  if (!can("broadcast.create")) return;
  try { templates = await api("/api/v1/broadcast-templates"); } catch (err) { templates = []; }
  const select = $("#composer").elements.template;
  select.replaceChildren(...templates.map((tp) => el("option", { value: tp.id }, `${tp.id} (${tp.severity})`)));
  showPlaceholders();
}

function showPlaceholders() {
  const tp = templates.find((x) => x.id === $("#composer").elements.template.value);
  $("#placeholders").replaceChildren(...(tp ? tp.placeholders : []).map((name) =>
    el("input", { name: `ph_${name}`, placeholder: name, maxlength: "200", required: "" })));
}

function areaTarget() {
  if (area.length < 3) throw new Error(t("no_area"));
  const ring = [...area, area[0]];
  return [{ kind: "polygon", geometry: { type: "Polygon", coordinates: [ring] } }];
}

function setDrawing(on) {
  drawing = on;
  $("#map").classList.toggle("drawing", on);
  $("#draw-area").textContent = on ? t("finish_area") : t("draw_area");
  $("#area-info").textContent = area.length ? `${area.length} ${t("area_points")}` : "";
  drawMap();
}

async function previewCount() {
  $("#composer-error").textContent = "";
  try {
    const body = { targets: areaTarget(), template: $("#composer").elements.template.value };
    const got = await api("/api/v1/campaigns/preview", { method: "POST", body: JSON.stringify(body) });
    $("#recipient-count").textContent = `${t("reach_n")} ${got.count ?? got.recipients ?? JSON.stringify(got)} ${t("recipients_n")}`;
  } catch (err) { $("#composer-error").textContent = err.message; }
}

async function loadActions() {
  if (!can("plans.read")) return;
  const rows = await api("/api/v1/plans/actions?status=proposed");
  $("#actions").replaceChildren(...rows.map((a) => {
    const li = el("li", { "data-action": a.id }, el("strong", {}, a.kind), ` ${a.plan_id} `,
      el("span", { class: "mono" }, a.incident_id.slice(0, 8)), " ",
      el("span", { class: "by" }, JSON.stringify(a.payload)));
    if (can("plans.decide")) {
      for (const [word, verb] of [["confirm", "confirm"], ["reject", "reject"]]) {
        const b = el("button", { type: "button", class: verb }, t(word));
        b.addEventListener("click", async () => {
          $("#action-error").textContent = "";
          try {
            await api(`/api/v1/plans/actions/${a.id}/${verb}`, { method: "POST", body: JSON.stringify({ note: "" }) });
            await loadActions();
          } catch (err) { $("#action-error").textContent = err.message; }
        });
        li.append(b);
      }
    }
    return li;
  }));
}

let lastIncidents = [];
async function loadIncidents() {
  const rows = await api("/api/v1/incidents");
  lastIncidents = rows;
  $("#incidents").replaceChildren(...rows.map(incidentItem));
  drawMap();
}

// ---- the offline map: district polygons (GeoJSON from conf/) and incidents, drawn as SVG
// with an equirectangular projection corrected for latitude; no tiles, no internet.
const SVGNS = "http://www.w3.org/2000/svg";
let mapLayers = null;
let mapUnproject = null;
let area = [];        // the broadcast area being drawn: [lon, lat] vertices
let drawing = false;

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function ringsOf(geometry) {
  return geometry.type === "Polygon" ? geometry.coordinates : geometry.coordinates.flat();
}

async function loadMap() {
  mapLayers = await api("/api/v1/map");
  drawMap();
}

function drawMap() {
  const box = $("#map");
  const features = (mapLayers && mapLayers.districts) ? mapLayers.districts.features : [];
  const located = lastIncidents.filter((i) => i.lat != null && i.lon != null);
  const placed = lastUnits.filter((u) => u.position && u.position.lat != null && u.position.lon != null);
  const points = located.map((i) => [i.lon, i.lat]);
  points.push(...placed.map((u) => [u.position.lon, u.position.lat]));
  if (!features.length) points.push(...area);
  for (const f of features) for (const ring of ringsOf(f.geometry)) points.push(...ring);
  $("#map-empty").hidden = points.length > 0;
  if (!points.length) { box.replaceChildren(); return; }
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const [x, y] of points) {
    minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y);
  }
  const k = Math.cos(((minY + maxY) / 2) * Math.PI / 180);
  const spanX = Math.max((maxX - minX) * k, 0.01), spanY = Math.max(maxY - minY, 0.01);
  const W = 600, H = Math.min(600, Math.max(240, W * spanY / spanX)), pad = 20;
  const scale = Math.min((W - 2 * pad) / spanX, (H - 2 * pad) / spanY);
  const offX = (W - spanX * scale) / 2, offY = (H - spanY * scale) / 2;
  const project = ([lon, lat]) => [offX + (lon - minX) * k * scale, offY + (maxY - lat) * scale];
  mapUnproject = ([x, y]) => [minX + (x - offX) / (k * scale), maxY - (y - offY) / scale];
  box.setAttribute("viewBox", `0 0 ${W} ${Math.round(H)}`);
  const layer = [];
  for (const f of features) {
    const name = (lang === "en" && f.properties.name_en) || f.properties.name;
    const rings = ringsOf(f.geometry);
    const d = rings.map((r) => "M" + r.map((p) => project(p).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join("");
    layer.push(svgEl("path", { class: "district", d, "data-district": f.properties.name },
      svgEl("title", {}, name)));
    const outer = rings[0];
    const [cx, cy] = project([outer.reduce((a, p) => a + p[0], 0) / outer.length,
      outer.reduce((a, p) => a + p[1], 0) / outer.length]);
    layer.push(svgEl("text", { x: cx.toFixed(1), y: cy.toFixed(1), "text-anchor": "middle" }, name));
  }
  if (area.length) {
    const pts = area.map((p) => project(p).map((v) => v.toFixed(1)).join(","));
    layer.push(svgEl(area.length > 2 && !drawing ? "polygon" : "polyline", { class: "area", points: pts.join(" ") }));
    for (const p of area) {
      const [x, y] = project(p);
      layer.push(svgEl("circle", { class: "vertex", cx: x.toFixed(1), cy: y.toFixed(1), r: 3 }));
    }
  }
  for (const u of placed) {
    const [x, y] = project([u.position.lon, u.position.lat]);
    layer.push(svgEl("rect", { class: `unit ${u.status}`, x: (x - 4).toFixed(1), y: (y - 4).toFixed(1),
      width: 8, height: 8, "data-unit": u.id }, svgEl("title", {}, `${u.name} · ${t(u.status)}`)));
  }
  for (const inc of located) {
    const [x, y] = project([inc.lon, inc.lat]);
    layer.push(svgEl("circle", { class: `inc ${inc.colour}`, cx: x.toFixed(1), cy: y.toFixed(1),
      r: Math.min(14, 6 + inc.report_count), "data-incident": inc.id },
      svgEl("title", {}, `${inc.grade} ${t(inc.category || "unclassified")} · ${inc.report_count} ${t("reports_n")}`)));
  }
  box.replaceChildren(...layer);
}

let previewTimer = null;
let previewSeq = 0;
function schedulePreview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(async () => {
    const text = $("#report-form").elements.text.value.trim();
    const seq = ++previewSeq;
    if (!text) { $("#preview").replaceChildren(); return; }
    try {
      const c = await api("/api/v1/classify", { method: "POST", body: JSON.stringify({ text }) });
      if (seq !== previewSeq) return; // a newer keystroke's answer will follow
      $("#preview").replaceChildren(
        gradeBadge(c.grade, c.colour), el("strong", {}, t(c.category || "unclassified")), " ",
        c.subtype ? el("span", { class: "tag" }, c.subtype) : "",
        ...c.agencies.map((a) => el("span", { class: "tag" }, a)),
        el("div", {}, c.reasons.join("; ")));
    } catch (err) { if (seq === previewSeq) $("#preview").textContent = err.message; }
  }, 250);
}

let me = null;

function campaignItem(c) {
  const counts = Object.entries(c.counts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  const item = el("li", { "data-campaign": c.id },
    el("strong", {}, c.title), " ", el("span", { class: "tag" }, t(c.status)),
    ` ${c.recipients} ${t("recipients_n")} · ${c.created_by}${counts ? " · " + counts : ""} `);
  const act = async (what) => {
    $("#campaign-error").textContent = "";
    try {
      await api(`/api/v1/campaigns/${c.id}/${what}`, { method: "POST", body: what === "cancel" ? "{}" : undefined });
      await loadCampaigns();
    } catch (err) { $("#campaign-error").textContent = err.message; }
  };
  if (c.status === "pending_approval" && me.permissions.includes("broadcast.approve") && c.created_by !== me.name) {
    const b = el("button", { type: "button", class: "approve" }, t("approve"));
    b.addEventListener("click", () => act("approve"));
    item.append(b);
  }
  if (["pending_approval", "sending"].includes(c.status) && me.permissions.includes("broadcast.create")) {
    const b = el("button", { type: "button", class: "cancel" }, t("cancel"));
    b.addEventListener("click", () => act("cancel"));
    item.append(b);
  }
  return item;
}

async function loadCampaigns() {
  if (!me || !me.permissions.includes("broadcast.read")) return;
  const rows = await api("/api/v1/campaigns");
  const full = await Promise.all(rows.slice(0, 20).map((c) => api(`/api/v1/campaigns/${c.id}`)));
  $("#campaigns").replaceChildren(...full.map(campaignItem));
}

function onEvent(envelope) {
  if (envelope.topic === "hello") return;
  showEvent(envelope);
  if (envelope.topic === "service.state") loadHealth().catch(() => {});
  if (envelope.topic === "incident.changed" || envelope.topic === "incident.status") loadIncidents().catch(() => {});
  if (envelope.topic.startsWith("incident.") && envelope.data.incident_id === selectedIncident) loadIncidentDetail().catch(() => {});
  if (envelope.topic === "unit.changed" || envelope.topic === "unit.position") loadUnits().catch(() => {});
  if (envelope.topic.startsWith("radio.")) { loadTalkgroups().catch(() => {}); loadSatphones().catch(() => {}); }
  if (envelope.topic.startsWith("satphone.")) loadSatphones().catch(() => {});
  if (envelope.topic.startsWith("conference.")) loadConferences().catch(() => {});
  if (envelope.topic.startsWith("call_") || envelope.topic.startsWith("agent_")) loadCalls().catch(() => {});
  if (envelope.topic.startsWith("plan.")) loadActions().catch(() => {});
  if (envelope.topic.startsWith("campaign.")) loadCampaigns().catch(() => {});
  if (envelope.topic === "duty_log.added" && !document.querySelector(`#duty-log [data-id="${envelope.data.id}"]`)) {
    $("#duty-log").prepend(dutyItem(envelope.data));
  }
}

function setLive(on) {
  const pill = $("#live");
  pill.className = `pill ${on ? "on" : "off"}`;
  pill.textContent = t(on ? "online" : "offline");
}

function connect() {
  if (!token) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/events?token=${encodeURIComponent(token)}`);
  socket.onopen = () => {
    retryMs = 500; setLive(true);
    // Anything may have changed while we were away: reload the views.
    loadHealth().catch(() => {}); loadDutyLog().catch(() => {}); loadIncidents().catch(() => {});
    loadCampaigns().catch(() => {}); loadUnits().catch(() => {}); loadActions().catch(() => {});
    loadTalkgroups().catch(() => {}); loadSatphones().catch(() => {}); loadConferences().catch(() => {});
    loadTemplates().catch(() => {}); loadCalls().catch(() => {});
    loadIncidentDetail().catch(() => {});
  };
  socket.onmessage = (msg) => onEvent(JSON.parse(msg.data));
  socket.onclose = (ev) => {
    setLive(false); socket = null;
    if (ev.code === 4401) { logout(); return; }
    if (token) setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

// ---- role views: each card names the views it belongs to (data-views); a user starts on
// the view of their role and may switch (the API still checks every action's permission).
const ROLE_VIEW = { call_taker: "taker", dispatcher: "dispatcher", supervisor: "supervisor",
  commander: "command", admin: "supervisor" };
function currentView() { return sessionStorage.getItem("dispatchd.view") || ROLE_VIEW[me.role] || "taker"; }
function showView(view) {
  sessionStorage.setItem("dispatchd.view", view);
  document.querySelectorAll("#views button").forEach((b) => {
    b.setAttribute("aria-pressed", String(b.dataset.view === view));
  });
  document.querySelectorAll("#app > [data-views]").forEach((card) => {
    const allowed = card.dataset.needs ? can(card.dataset.needs) : true;
    const wanted = card.dataset.when === "incident" ? selectedIncident !== null
      : card.dataset.when === "satphones" ? satphoneCount > 0 : true;
    card.hidden = !allowed || !wanted || !card.dataset.views.split(" ").includes(view);
  });
  document.querySelectorAll("#app [data-needs]:not([data-views])").forEach((part) => {
    part.hidden = !can(part.dataset.needs);
  });
  drawMap();
}
document.querySelectorAll("#views button").forEach((b) => {
  b.addEventListener("click", () => showView(b.dataset.view));
});

async function showApp(user) {
  me = await api("/api/v1/me");
  $("#views").hidden = false;
  $("#my-phone").value = localStorage.getItem("dispatchd.sip_account") || me.name;
  showView(currentView());
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `${user.name} (${user.role})`;
  loadMap().catch(() => {});
  connect();
}

function logout() {
  if (token) api("/api/v1/auth/logout", { method: "POST" }).catch(() => {});
  token = null;
  sessionStorage.removeItem("dispatchd.token");
  if (socket) socket.close();
  $("#app").hidden = true;
  $("#views").hidden = true;
  sessionStorage.removeItem("dispatchd.view");
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#who").textContent = "";
}

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  $("#login-error").textContent = "";
  try {
    const session = await api("/api/v1/auth/login", {
      method: "POST", body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
    });
    token = session.token;
    sessionStorage.setItem("dispatchd.token", token);
    ev.target.reset();
    showApp(session.user);
  } catch (err) { $("#login-error").textContent = err.message; }
});

$("#duty-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = ev.target.elements.text.value.trim();
  $("#duty-error").textContent = "";
  try {
    await api("/api/v1/duty-log", { method: "POST", body: JSON.stringify({ text }) });
    ev.target.reset();
  } catch (err) { $("#duty-error").textContent = err.message; }
});

$("#report-form").elements.text.addEventListener("input", schedulePreview);
$("#report-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  const body = { text: f.text.value.trim(), caller: f.caller.value.trim() };
  if (f.lat.value !== "" && f.lon.value !== "") { body.lat = Number(f.lat.value); body.lon = Number(f.lon.value); }
  $("#report-error").textContent = "";
  // A live-classification preview still pending or in flight must not replace (or, once the
  // form is reset, clear) the confirmation below.
  clearTimeout(previewTimer);
  previewSeq += 1;
  try {
    const placed = myCall
      ? await api(`/api/v1/calls/${myCall.call_id}/describe`, { method: "POST",
        body: JSON.stringify({ text: body.text, lat: body.lat, lon: body.lon }) })
      : await api("/api/v1/reports", { method: "POST", body: JSON.stringify(body) });
    ev.target.reset();
    $("#preview").textContent = `${t("saved_in")} ${placed.incident_id.slice(0, 8)}`;
  } catch (err) { $("#report-error").textContent = err.message; }
});

$("#lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  localStorage.setItem("dispatchd.lang", lang);
  applyLanguage();
  if (token) { loadHealth().catch(() => {}); loadDutyLog().catch(() => {}); loadIncidents().catch(() => {}); }
  drawMap();
});
$("#logout").addEventListener("click", logout);
$("#recommend").addEventListener("click", recommend);
$("#merge").addEventListener("click", async () => {
  const absorb = $("#merge-with").value;
  if (!absorb || !selectedIncident) return;
  $("#incident-error").textContent = "";
  try {
    await api(`/api/v1/incidents/${selectedIncident}/merge`, { method: "POST", body: JSON.stringify({ absorb }) });
    await Promise.all([loadIncidents(), loadIncidentDetail()]);
  } catch (err) { $("#incident-error").textContent = err.message; }
});
$("#split").addEventListener("click", async () => {
  const ids = [...document.querySelectorAll("#split-reports input:checked")].map((i) => i.value);
  if (!ids.length || !selectedIncident) return;
  $("#incident-error").textContent = "";
  try {
    const created = await api(`/api/v1/incidents/${selectedIncident}/split`, { method: "POST", body: JSON.stringify({ report_ids: ids }) });
    await loadIncidents();
    await selectIncident(created.id);
  } catch (err) { $("#incident-error").textContent = err.message; }
});
$("#map").addEventListener("click", (ev) => {
  if (!drawing || !mapUnproject) return;
  const svg = $("#map");
  const pt = new DOMPoint(ev.clientX, ev.clientY).matrixTransform(svg.getScreenCTM().inverse());
  const [lon, lat] = mapUnproject([pt.x, pt.y]);
  area.push([Number(lon.toFixed(6)), Number(lat.toFixed(6))]);
  setDrawing(true);
});
$("#draw-area").addEventListener("click", () => setDrawing(!drawing));
$("#clear-area").addEventListener("click", () => { area = []; setDrawing(false); $("#recipient-count").textContent = ""; });
$("#preview-count").addEventListener("click", previewCount);
$("#composer").elements.template.addEventListener("change", showPlaceholders);
$("#composer").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target.elements;
  $("#composer-error").textContent = "";
  try {
    const values = {};
    for (const input of document.querySelectorAll("#placeholders input")) values[input.name.slice(3)] = input.value.trim();
    const body = { title: f.title.value.trim(), template: f.template.value, values, targets: areaTarget(),
      public: true, incident_id: selectedIncident };
    await api("/api/v1/campaigns/from-area", { method: "POST", body: JSON.stringify(body) });
    ev.target.reset();
    area = []; setDrawing(false);
    showPlaceholders();
    await loadCampaigns();
  } catch (err) { $("#composer-error").textContent = err.message; }
});
$("#assign").addEventListener("click", assign);
$("#incident-close").addEventListener("click", () => { selectedIncident = null; showView(currentView()); });
$("#note-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = ev.target.elements.text.value.trim();
  $("#incident-error").textContent = "";
  try {
    await api(`/api/v1/incidents/${selectedIncident}/notes`, { method: "POST", body: JSON.stringify({ text }) });
    ev.target.reset();
    await loadIncidentDetail();
  } catch (err) { $("#incident-error").textContent = err.message; }
});

applyLanguage();
if (token) api("/api/v1/me").then(showApp).catch(() => logout());
