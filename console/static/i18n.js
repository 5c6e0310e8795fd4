// Every user-visible string of the console: key -> [Chinese (default), English].
// Keys are grouped by prefix; `type.*`, `status.*`, `outcome.*`, `action.*` mirror the server's
// enum values so a value from the API translates with t(`type.${a.type}`).

const STRINGS = {
  'app.title': ['12349 养老服务值班台', '12349 Elderly Care Duty Console'],

  'login.heading': ['值班人员登录', 'Duty officer sign-in'],
  'login.username': ['用户名', 'Username'],
  'login.password': ['密码', 'Password'],
  'login.submit': ['登录', 'Sign in'],
  'login.wrong': ['用户名或密码错误', 'Wrong username or password'],
  'login.expired': ['登录已过期，请重新登录', 'Your session has expired; please sign in again'],
  'login.failed': ['登录失败：{msg}', 'Sign-in failed: {msg}'],

  'header.logout': ['退出', 'Sign out'],
  'header.lang': ['English', '中文'],
  'header.regions': ['辖区：{regions}', 'Regions: {regions}'],

  'conn.connected': ['已连接', 'Connected'],
  'conn.reconnecting': ['正在重连…', 'Reconnecting…'],
  'conn.offline': ['离线', 'Offline'],
  'conn.title': ['实时推送状态；离线时告警列表可能不是最新', 'Live updates; while offline the alert list may be out of date'],

  'sound.enable': ['点击此处启用报警声音', 'Click here to enable alarm sound'],
  'sound.enable.urgent': ['有紧急告警！点击此处启用报警声音', 'Urgent alert! Click here to enable alarm sound'],
  'sound.unsupported': ['此浏览器不支持声音提醒', 'This browser cannot play alarm sounds'],

  'tab.alerts': ['告警', 'Alerts'],
  'tab.devices': ['设备', 'Devices'],

  'queue.heading': ['未处理告警', 'Unresolved alerts'],
  'queue.counts': ['待认领 {open} · 处理中 {ack}', 'Unclaimed {open} · in progress {ack}'],
  'queue.empty': ['当前没有未处理的告警', 'No unresolved alerts'],
  'queue.more': ['还有更多告警未显示（仅显示前 {n} 条）', 'More alerts exist (only the first {n} are shown)'],
  'queue.resolved': ['最近已结案', 'Recently resolved'],
  'queue.resolved.empty': ['暂无已结案告警', 'No resolved alerts yet'],
  'queue.new': ['新', 'new'],
  'queue.by': ['{who} 处理中', '{who} handling'],
  'queue.mine': ['我处理中', 'handled by me'],
  'queue.events': ['{n} 次', '{n}×'],

  'detail.empty': ['从左侧选择一条告警查看详情', 'Select an alert on the left to see its details'],
  'detail.loading': ['正在加载…', 'Loading…'],
  'detail.wearer': ['老人信息', 'Wearer'],
  'detail.noWearer': ['该设备未登记佩戴者', 'No wearer registered for this device'],
  'detail.age': ['{age} 岁', 'age {age}'],
  'detail.birth': ['{year} 年生', 'born {year}'],
  'detail.conditions': ['健康状况', 'Conditions'],
  'detail.none': ['无', 'none'],
  'detail.device': ['设备', 'Device'],
  'detail.times': ['时间', 'Times'],
  'detail.region': ['辖区', 'Region'],
  'detail.firstTs': ['首次事件', 'First event'],
  'detail.lastTs': ['最近事件', 'Latest event'],
  'detail.openedAt': ['告警产生', 'Alert opened'],
  'detail.ackAt': ['认领', 'Claimed'],
  'detail.resolvedAt': ['结案', 'Resolved'],
  'detail.eventCount': ['事件次数', 'Events'],
  'detail.outcome': ['处理结果', 'Outcome'],
  'detail.evidence': ['证据', 'Evidence'],
  'detail.evidence.none': ['没有可显示的证据', 'No evidence to show'],
  'detail.evidence.error': ['证据加载失败：{msg}', 'Could not load evidence: {msg}'],
  'detail.map': ['位置与安全区', 'Position and safe zones'],
  'detail.accel': ['加速度（跌倒冲击）', 'Acceleration (fall impact)'],
  'detail.accel.none': ['该设备未上传原始加速度数据', 'This device sent no raw acceleration samples'],
  'detail.event': ['事件数据', 'Event data'],
  'detail.deliveries': ['联系人与通知', 'Contacts and notifications'],
  'detail.deliveries.none': ['尚无通知记录', 'No notifications yet'],
  'detail.audit': ['处理记录', 'Audit trail'],
  'detail.audit.none': ['暂无记录', 'No entries'],
  'detail.refresh': ['刷新', 'Refresh'],

  'col.recipient': ['接收方', 'Recipient'],
  'col.channel': ['方式', 'Channel'],
  'col.address': ['地址', 'Address'],
  'col.status': ['状态', 'Status'],
  'col.attempts': ['尝试', 'Tries'],
  'col.sentAt': ['发送时间', 'Sent'],
  'col.error': ['最近错误', 'Last error'],

  'act.ack': ['认领 · 我来处理', 'Claim · I\'ll handle it'],
  'act.resolve': ['结案', 'Resolve'],
  'act.outcome': ['处理结果', 'Outcome'],
  'act.outcome.choose': ['请选择处理结果…', 'Choose an outcome…'],
  'act.outcome.required': ['请先选择处理结果', 'Choose an outcome first'],
  'act.resolveNote': ['结案说明（可选）', 'Resolution note (optional)'],
  'act.note': ['添加备注', 'Add a note'],
  'act.note.placeholder': ['例如：已致电老人，无人接听；正在联系女儿', 'e.g. called the elder, no answer; calling daughter'],
  'act.note.submit': ['保存备注', 'Save note'],
  'act.note.empty': ['备注不能为空', 'The note is empty'],
  'act.note.saved': ['备注已保存', 'Note saved'],
  'act.busy': ['正在提交…', 'Sending…'],
  'act.mine': ['您正在处理此告警', 'You are handling this alert'],
  'act.claimedBy': ['已由 {owner} 认领', 'Claimed by {owner}'],
  'act.resolvedBy': ['已由 {owner} 结案', 'Resolved by {owner}'],
  'act.alreadyResolved': ['此告警已结案', 'This alert is resolved'],
  'act.resolvedOutcome': ['结案：{outcome}', 'Resolved: {outcome}'],

  'err.network': ['网络错误，无法连接服务器', 'Network error: the server cannot be reached'],
  'err.http': ['请求失败（{status}）：{msg}', 'Request failed ({status}): {msg}'],
  'err.notFound': ['告警不存在或不在您的辖区', 'No such alert, or not in your regions'],
  'err.unavailable': ['服务暂时不可用，请稍后重试', 'Service temporarily unavailable; try again shortly'],
  'err.list': ['告警列表加载失败：{msg}', 'Could not load alerts: {msg}'],
  'err.devices': ['设备列表加载失败：{msg}', 'Could not load devices: {msg}'],
  'err.unregistered': ['未登记设备加载失败：{msg}', 'Could not load unregistered devices: {msg}'],

  'devices.heading': ['辖区设备', 'Devices in my regions'],
  'devices.summary': ['共 {total} 台 · 离线 {offline} · 未佩戴 {notWorn} · 低电量 {low}', '{total} devices · {offline} offline · {notWorn} not worn · {low} low battery'],
  'devices.empty': ['没有设备', 'No devices'],
  'devices.more': ['仅显示前 {n} 台（共 {total} 台），请用筛选查找', 'Showing the first {n} of {total}; use the filter'],
  'devices.filter': ['筛选（设备号、老人、辖区）', 'Filter (device, wearer, region)'],
  'devices.online': ['在线', 'online'],
  'devices.offline': ['离线', 'offline'],
  'devices.worn': ['佩戴中', 'worn'],
  'devices.notWorn': ['未佩戴', 'not worn'],
  'devices.unknown': ['未知', 'unknown'],

  'unreg.heading': ['未登记设备', 'Unregistered devices'],
  'unreg.summary': ['近 24 小时 {n} 台 · 报警 {alarms} 条', '{n} in the last 24 h · {alarms} alarms'],
  'unreg.help': ['这些设备在本辖区的主题上发送了数据，但未在本辖区登记。其普通数据不入库；报警照常告警。请核实后登记。',
    'These devices published on your regions\' topics without being registered there. Their readings are not stored; their alarms are raised anyway. Check them and register them.'],
  'unreg.empty': ['近 24 小时没有未登记设备', 'No unregistered devices in the last 24 h'],
  'unreg.notRegistered': ['未登记', 'not registered'],
  'unreg.registeredIn': ['登记在 {region}', 'registered in {region}'],
  'unreg.registeredNow': ['已补登记（接入服务重启后生效）', 'registered since (effective once ingest restarts)'],
  'ucol.device': ['设备号', 'Device'],
  'ucol.region': ['上报辖区', 'Topic region'],
  'ucol.readings': ['数据条数', 'Readings'],
  'ucol.alarms': ['报警', 'Alarms'],
  'ucol.lastSeen': ['最后收到', 'Last received'],
  'ucol.registry': ['登记', 'Registry'],

  'dcol.state': ['状态', 'State'],
  'dcol.device': ['设备号', 'Device'],
  'dcol.kind': ['类型', 'Kind'],
  'dcol.wearer': ['佩戴者', 'Wearer'],
  'dcol.region': ['辖区', 'Region'],
  'dcol.battery': ['电量', 'Battery'],
  'dcol.worn': ['佩戴', 'Worn'],
  'dcol.lastSeen': ['最后上线', 'Last seen'],

  'map.scale': ['比例尺', 'Scale'],
  'map.north': ['北', 'N'],
  'map.position': ['告警位置', 'Alert position'],
  'map.latest': ['最新位置', 'Latest fix'],
  'map.zone': ['安全区', 'Safe zone'],
  'map.track': ['轨迹', 'Track'],
  'map.active': ['生效 {window}', 'active {window}'],

  'plot.impact': ['冲击', 'impact'],
  'plot.peak': ['峰值 {g} g', 'peak {g} g'],
  'plot.time': ['时间 (秒)', 'time (s)'],

  'time.justNow': ['刚刚', 'just now'],
  'time.minutes': ['{n} 分钟前', '{n} min ago'],
  'time.hours': ['{n} 小时前', '{n} h ago'],
  'time.days': ['{n} 天前', '{n} d ago'],
  'time.never': ['从未', 'never'],

  'type.sos': ['SOS 求救', 'SOS'],
  'type.fall': ['跌倒', 'Fall'],
  'type.wear': ['佩戴状态', 'Wear'],
  'type.home_alarm': ['居家报警', 'Home alarm'],
  'type.geofence_exit': ['走出安全区', 'Left safe zone'],
  'type.heart_rate': ['心率异常', 'Abnormal heart rate'],
  'type.inactivity': ['长时间无活动', 'Inactivity'],
  'type.device_removed': ['设备被摘下', 'Device removed'],
  'type.low_battery': ['电量低', 'Low battery'],
  'type.offline': ['设备离线', 'Device offline'],
  'type.device_alarm': ['设备报警', 'Device alarm'],

  'status.open': ['待认领', 'Unclaimed'],
  'status.acknowledged': ['处理中', 'In progress'],
  'status.resolved': ['已结案', 'Resolved'],

  'priority': ['P{p}', 'P{p}'],
  'priority.1': ['紧急', 'urgent'],
  'priority.2': ['高', 'high'],
  'priority.3': ['中', 'medium'],
  'priority.4': ['低', 'low'],

  'outcome.false_alarm': ['误报', 'False alarm'],
  'outcome.safe': ['已联系，老人安全', 'Reached, safe'],
  'outcome.helped_on_site': ['已上门处置', 'Helped on site'],
  'outcome.ambulance': ['已呼叫救护车 (120)', 'Ambulance sent (120)'],
  'outcome.police': ['已报警 (110)', 'Police called (110)'],
  'outcome.other': ['其他（请在说明中写明）', 'Other (say what in the note)'],
  'outcome.auto': ['系统自动结案（{event}）', 'Resolved automatically ({event})'],

  'action.opened': ['告警产生', 'Opened'],
  'action.updated': ['新事件', 'New event'],
  'action.routed': ['开始通知', 'Notifying'],
  'action.escalated': ['升级通知', 'Escalated'],
  'action.claim_expired': ['认领超时', 'Claim expired'],
  'action.ladder_repeated': ['通知重新开始', 'Escalation restarted'],
  'action.priority_raised': ['优先级提升', 'Priority raised'],
  'action.queued': ['通知排队', 'Message queued'],
  'action.suppressed': ['重复通知已抑制', 'Duplicate suppressed'],
  'action.grouped': ['通知已合并', 'Message grouped'],
  'action.undeliverable': ['无法通知', 'Undeliverable'],
  'action.delivery_failed': ['通知失败', 'Delivery failed'],
  'action.delivered': ['通知已送达', 'Delivered'],
  'action.delivery_gave_up': ['通知放弃', 'Delivery given up'],
  'action.acknowledged': ['认领', 'Claimed'],
  'action.note': ['备注', 'Note'],
  'action.resolved': ['结案', 'Resolved'],
  'action.deliveries_cancelled': ['取消待发通知', 'Pending messages cancelled'],
  'action.command_requested': ['向设备发送指令', 'Command requested'],
  'action.command_sent': ['指令已下发到设备', 'Command sent to the device'],
  'action.command_acknowledged': ['设备已确认指令', 'Device confirmed the command'],
  'action.command_failed': ['指令失败', 'Command failed'],

  'cmd.title': ['设备指令', 'Device commands'],
  'cmd.locate': ['立即定位', 'Locate now'],
  'cmd.call': ['呼叫手表（手表拨打调度中心）', 'Call the watch (it dials the centre)'],
  'cmd.number': ['手表拨打的号码', 'Number the watch dials'],
  'cmd.number.required': ['请填写手表要拨打的号码', 'Enter the number the watch should dial'],
  'cmd.none': ['尚未发送指令', 'No commands sent'],
  'cmd.name.locate': ['定位', 'Locate'],
  'cmd.name.call_back': ['回拨', 'Call back'],
  'cmd.name.find': ['找手表', 'Find'],
  'cmdstatus.requested': ['已发出，等待网关', 'requested, waiting for the gateway'],
  'cmdstatus.sent': ['已下发，等待设备确认', 'sent, waiting for the device'],
  'cmdstatus.acknowledged': ['设备已确认', 'confirmed by the device'],
  'cmdstatus.failed': ['失败', 'failed'],
  'cmdstatus.no_answer': ['无网关应答（设备未连接）', 'no gateway answered (device not connected)'],

  'dstatus.pending': ['等待发送', 'pending'],
  'dstatus.sending': ['发送中', 'sending'],
  'dstatus.sent': ['已发送', 'sent'],
  'dstatus.failed': ['失败', 'failed'],
  'dstatus.grouped': ['已合并', 'grouped'],
  'dstatus.cancelled': ['已取消', 'cancelled'],
  'dstatus.suppressed': ['已抑制', 'suppressed'],

  'channel.sms': ['短信', 'SMS'],
  'channel.voice': ['语音电话', 'Voice call'],
  'channel.email': ['邮件', 'E-mail'],
  'channel.webhook': ['调度平台', 'Dispatch webhook'],
  'channel.mqtt': ['MQTT', 'MQTT'],

  'recipient.dispatch': ['12349 调度中心', '12349 dispatch'],
  'recipient.community': ['社区工作人员', 'Community staff'],
  'recipient.family': ['家属 {n}', 'Family {n}'],
  'recipient.all': ['（全部）', '(all)'],

  'escal.notify': ['通知', 'notify'],
  'escal.call_elder': ['回拨老人', 'call the elder'],
  'escal.send_staff': ['派人上门', 'send staff'],
  'escal.call_emergency': ['呼叫 120', 'call 120'],
  'escal.call_police': ['报警 110', 'call 110'],
};

const STORAGE_KEY = 'eldercare.lang';
const listeners = new Set();
let current = 'zh';

export const LANGS = ['zh', 'en'];

/** The language remembered on this machine, or null when the officer never chose one. */
export function storedLang() {
  try {
    const v = localStorage.getItem(STORAGE_KEY);
    return LANGS.includes(v) ? v : null;
  } catch {
    return null; // storage disabled: fall back to defaults, never fail the page
  }
}

export function lang() {
  return current;
}

/** Switch language; `remember` stores the choice (only explicit toggles do). */
export function setLang(code, { remember = false } = {}) {
  if (!LANGS.includes(code)) code = 'zh';
  current = code;
  document.documentElement.lang = code === 'zh' ? 'zh-CN' : 'en';
  if (remember) {
    try { localStorage.setItem(STORAGE_KEY, code); } catch { /* ignore: choice not remembered */ }
  }
  applyStatic(document);
  for (const fn of listeners) fn(code);
}

export function onLangChange(fn) {
  listeners.add(fn);
}

/** Translate `key`, filling {name} placeholders from `vars`. Unknown keys show as the key. */
export function t(key, vars) {
  const pair = STRINGS[key];
  if (!pair) return key;
  let s = pair[LANGS.indexOf(current)] ?? pair[0];
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

/** Translate an enum value (`type`, `status`, ...) with a readable fallback for new values. */
export function tEnum(prefix, value) {
  if (value === null || value === undefined || value === '') return '';
  const key = `${prefix}.${value}`;
  const s = t(key);
  return s === key ? String(value).replace(/_/g, ' ') : s;
}

/** Translate static markup: data-i18n (text), data-i18n-placeholder, data-i18n-title. */
export function applyStatic(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
}
