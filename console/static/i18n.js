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
  'tab.wearers': ['老人档案', 'Elders'],
  'tab.import': ['导入', 'Import'],

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
  'unreg.registeredNow': ['已补登记（数秒内生效）', 'registered since (admitted within seconds)'],
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

  // --- Registry pages: elders list, wearer page, zones, import (issue #12) ---
  'wearers.heading': ['老人档案', 'Elders'],
  'wearers.search': ['搜索：姓名、电话、身份证号、设备号', 'Search: name, phone, ID card, device id'],
  'wearers.region': ['辖区', 'Region'],
  'wearers.region.all': ['全部辖区', 'All my regions'],
  'wearers.care': ['照护类别', 'Care category'],
  'wearers.care.all': ['全部类别', 'All categories'],
  'wearers.active': ['状态', 'State'],
  'wearers.active.yes': ['在册', 'Active'],
  'wearers.active.no': ['已注销', 'Deactivated'],
  'wearers.active.all': ['全部', 'All'],
  'wearers.activeState': ['在册', 'active'],
  'wearers.inactive': ['已注销', 'deactivated'],
  'wearers.new': ['新建老人档案', 'Enrol an elder'],
  'wearers.export': ['导出：', 'Export:'],
  'wearers.empty': ['没有符合条件的老人', 'No elders match'],
  'wearers.page': ['第 {page} 页 · 本页 {n} 人', 'Page {page} · {n} on this page'],
  'wearers.prev': ['上一页', 'Previous'],
  'wearers.next': ['下一页', 'Next'],
  'wcol.name': ['姓名', 'Name'],
  'wcol.id': ['编号', 'Id'],
  'wcol.age': ['性别/年龄', 'Sex/age'],
  'wcol.region': ['辖区', 'Region'],
  'wcol.phone': ['电话', 'Phone'],
  'wcol.care': ['照护类别', 'Care'],
  'wcol.living': ['居住状况', 'Living'],
  'wcol.devices': ['设备', 'Devices'],
  'wcol.idcard': ['身份证号', 'ID card'],
  'wcol.state': ['状态', 'State'],

  'wearer.back': ['← 返回老人档案', '← Back to elders'],
  'wearer.newHeading': ['新建老人档案', 'Enrol an elder'],
  'wearer.details': ['基本信息', 'Details'],
  'wearer.audit': ['修改记录', 'Change history'],
  'wearer.meta': ['建档 {created} · 更新 {updated} · 第 {version} 版', 'enrolled {created} · updated {updated} · version {version}'],
  'wearer.inactive': ['已注销（{reason}，{at}）', 'Deactivated ({reason}, {at})'],
  'wf.id': ['老人编号', 'Id'],
  'wf.name': ['姓名', 'Name'],
  'wf.sex': ['性别', 'Sex'],
  'wf.birth_year': ['出生年份', 'Birth year'],
  'wf.birth_date': ['出生日期', 'Birth date'],
  'wf.id_card': ['身份证号', 'ID card'],
  'wf.id_card.new': ['输入身份证号', 'Enter the ID-card number'],
  'wf.id_card.replace': ['输入新号码以更换', 'Type a new number to replace it'],
  'wf.phone': ['电话', 'Phone'],
  'wf.address': ['住址', 'Address'],
  'wf.region': ['辖区', 'Region'],
  'wf.living_situation': ['居住状况', 'Living situation'],
  'wf.care_categories': ['照护类别', 'Care categories'],
  'wf.conditions': ['健康状况', 'Conditions'],
  'wf.conditions.help': ['多项用顿号或逗号分隔', 'Separate several with commas'],
  'wf.guardian': ['监护人', 'Guardian'],
  'wf.guardian.name': ['姓名', 'Name'],
  'wf.guardian.phone': ['电话', 'Phone'],
  'wf.guardian.relation': ['关系', 'Relation'],
  'wf.home': ['住所位置 (WGS-84)', 'Home (WGS-84)'],
  'wf.lat': ['纬度', 'Latitude'],
  'wf.lon': ['经度', 'Longitude'],
  'wf.timezone': ['时区', 'Time zone'],
  'wf.notes': ['备注', 'Notes'],
  'wf.save': ['保存修改', 'Save changes'],
  'wf.create': ['建档', 'Enrol'],
  'wf.id.required': ['请填写老人编号', 'Enter an id'],
  'wf.name.required': ['请填写姓名', 'Enter the name'],
  'wf.region.required': ['请选择辖区', 'Choose a region'],
  'wf.home.invalid': ['住所位置需要纬度和经度两个数字', 'Home needs both latitude and longitude'],

  'dev.heading': ['设备', 'Devices'],
  'dev.id': ['设备号', 'Device'],
  'dev.kind': ['类型', 'Kind'],
  'dev.model': ['型号', 'Model'],
  'dev.imei': ['IMEI / SIM', 'IMEI / SIM'],
  'dev.sim': ['SIM 卡号', 'SIM number'],
  'dev.handedOut': ['发放日期', 'Handed out'],
  'dev.actions': ['操作', 'Actions'],
  'dev.none': ['未绑定设备', 'No device bound'],
  'dev.bind': ['绑定', 'Bind'],
  'dev.bind.heading': ['绑定设备', 'Bind a device'],
  'dev.bind.help': ['已登记的设备按设备号直接绑定；新设备按所填信息登记到本辖区后绑定。', 'A registered device is bound by its id; a new one is registered in this region with these details, then bound.'],
  'dev.id.placeholder': ['设备号', 'Device id'],
  'dev.unbind': ['解绑', 'Unbind'],
  'dev.unbind.reason': ['解绑原因（必填）', 'Reason (required)'],
  'dev.history': ['绑定记录', 'Binding history'],
  'dev.history.none': ['暂无绑定记录', 'No bindings yet'],
  'dev.bound': ['{at} 由 {by} 绑定', 'bound {at} by {by}'],
  'dev.unbound': ['{at} 由 {by} 解绑（{reason}）', 'unbound {at} by {by} ({reason})'],
  'coord.wgs84': ['上报 WGS-84 坐标', 'reports WGS-84'],
  'coord.gcj02': ['上报 GCJ-02 坐标', 'reports GCJ-02'],

  'contacts.heading': ['紧急联系人', 'Emergency contacts'],
  'contacts.help': ['按顺序呼叫：第一位最先通知', 'Called in order: the first is notified first'],
  'contacts.none': ['没有联系人', 'No contacts'],
  'contacts.add': ['添加联系人', 'Add a contact'],
  'contacts.save': ['保存联系人', 'Save contacts'],
  'contacts.name': ['姓名', 'Name'],
  'contacts.relation': ['关系', 'Relation'],
  'contacts.phone': ['电话', 'Phone'],
  'contacts.email': ['邮箱（可选）', 'E-mail (optional)'],
  'contacts.up': ['上移', 'Move up'],
  'contacts.down': ['下移', 'Move down'],
  'contacts.remove': ['删除', 'Remove'],

  'zones.heading': ['安全区', 'Safe zones'],
  'zones.map': ['安全区地图', 'Safe zones map'],
  'zones.drawCircle': ['画圆形安全区', 'Draw a circle'],
  'zones.drawPolygon': ['画多边形安全区', 'Draw a polygon'],
  'zones.hint.circle': ['在地图上点击圆心，移动鼠标后再点击确定半径', 'Click the centre on the map, move, click again for the radius'],
  'zones.hint.polygon': ['依次点击各顶点，点击第一个顶点结束', 'Click each corner; click the first one to finish'],
  'zones.none': ['尚未设置安全区', 'No safe zones yet'],
  'zones.kind.circle': ['圆形', 'circle'],
  'zones.kind.polygon': ['多边形', 'polygon'],
  'zones.points': ['个顶点', 'points'],
  'zones.always': ['全天生效', 'always active'],
  'zones.edit': ['编辑', 'Edit'],
  'zones.delete': ['删除', 'Delete'],
  'zones.delete.confirm': ['删除安全区「{name}」？', 'Delete the safe zone "{name}"?'],
  'zones.new': ['新安全区', 'New safe zone'],
  'zones.editing': ['编辑安全区（拖动图形的顶点调整）', 'Edit the zone (drag its handles)'],
  'zones.name': ['名称', 'Name'],
  'zones.name.placeholder': ['例如：家', 'e.g. Home'],
  'zones.window': ['生效时段（可选）', 'Active hours (optional)'],
  'zones.window.help': ['留空表示全天生效；可跨午夜，如 20:00–07:00', 'Empty: always; may wrap midnight, e.g. 20:00–07:00'],
  'zones.window.both': ['生效时段需要开始和结束时间', 'Active hours need both a start and an end'],
  'zones.save': ['保存安全区', 'Save zone'],
  'zones.cancel': ['取消', 'Cancel'],
  'zones.home': ['住所', 'Home'],
  'zones.gcj02': ['地图为 GCJ-02（国测局）坐标，位置与安全区已换算；保存时换算回 WGS-84。', 'The map is in GCJ-02; positions and zones are converted, and back to WGS-84 when saved.'],
  'zones.wgs84': ['坐标系 WGS-84。', 'Coordinates: WGS-84.'],

  'deact.heading': ['注销档案', 'Deactivate'],
  'deact.help': ['注销后停止该老人的告警升级并解绑其设备，历史记录保留。', 'Ends this elder\'s alert escalation and frees their devices; history is kept.'],
  'deact.choose': ['请选择原因…', 'Choose a reason…'],
  'deact.note': ['说明（可选）', 'Note (optional)'],
  'deact.submit': ['注销', 'Deactivate'],
  'deact.required': ['请选择注销原因', 'Choose a reason'],
  'deact.confirm': ['确定注销 {name} 的档案？', 'Deactivate {name}?'],

  'import.heading': ['批量导入老人名单', 'Import a list of elders'],
  'import.help': ['选择民政或街道的名单（CSV 或 Excel XLSX）。先检查：逐行列出每个错误，不写入任何数据；检查无误后再导入（全部成功或全部不写入）。',
    'Choose a civil-affairs or street list (CSV or Excel XLSX). Check it first: every error is listed by row and column and nothing is written; then import (all rows or none).'],
  'import.columns': ['列名可用中文或英文，见文档“导入与导出”。', 'Headers may be Chinese or English; see the docs, "Import and export".'],
  'import.check': ['检查文件', 'Check the file'],
  'import.busy': ['正在处理…', 'Working…'],
  'import.report': ['检查结果', 'Check report'],
  'import.bad': ['共 {rows} 行，{valid} 行无误，{n} 处错误；请修改后重新检查。未写入任何数据。', '{rows} rows, {valid} valid, {n} errors; fix them and check again. Nothing was written.'],
  'import.good': ['共 {rows} 行，全部无误：将新建 {created} 人，更新 {updated} 人，绑定 {bound} 台设备。', '{rows} rows, all valid: {created} new, {updated} updated, {bound} devices to bind.'],
  'import.run': ['导入 {rows} 行', 'Import {rows} rows'],
  'import.done': ['已导入 {rows} 行：新建 {created} 人，更新 {updated} 人，绑定 {bound} 台设备。', 'Imported {rows} rows: {created} new, {updated} updated, {bound} devices bound.'],
  'import.row': ['行', 'Row'],
  'import.column': ['列', 'Column'],
  'import.value': ['内容', 'Value'],
  'import.message': ['问题', 'Problem'],
  'import.more': ['仅显示前 {n} 处（共 {total} 处）', 'Showing the first {n} of {total}'],

  'err.wearers': ['老人档案加载失败：{msg}', 'Could not load elders: {msg}'],
  'err.wearer': ['档案加载失败：{msg}', 'Could not load the record: {msg}'],
  'err.audit': ['修改记录加载失败：{msg}', 'Could not load the change history: {msg}'],

  'sex.female': ['女', 'female'],
  'sex.male': ['男', 'male'],
  'living.alone': ['独居', 'lives alone'],
  'living.empty_nest': ['空巢', 'empty nest'],
  'living.with_family': ['与家人同住', 'with family'],
  'living.care_home': ['养老机构', 'care home'],
  'care.special_difficulty': ['特困', 'special difficulty'],
  'care.low_income': ['低保', 'low income'],
  'care.disabled': ['失能', 'disabled'],
  'care.dementia': ['失智', 'dementia'],
  'care.over_80': ['80岁以上', 'over 80'],
  'kind.bracelet': ['手环', 'bracelet'],
  'kind.watch': ['手表', 'watch'],
  'kind.fall_sensor': ['跌倒报警器', 'fall sensor'],
  'kind.home_sensor': ['居家报警器', 'home sensor'],
  'kind.pendant': ['呼叫器', 'pendant'],
  'reason.moved_away': ['迁出', 'moved away'],
  'reason.deceased': ['去世', 'deceased'],
  'reason.other': ['其他', 'other'],
  'raction.wearer_created': ['建档', 'Enrolled'],
  'raction.wearer_updated': ['修改信息', 'Details changed'],
  'raction.wearer_deactivated': ['注销', 'Deactivated'],
  'raction.wearer_imported': ['导入', 'Imported'],
  'raction.device_created': ['登记设备', 'Device registered'],
  'raction.device_updated': ['修改设备', 'Device changed'],
  'raction.device_bound': ['绑定设备', 'Device bound'],
  'raction.device_unbound': ['解绑设备', 'Device unbound'],
  'raction.contacts_replaced': ['修改联系人', 'Contacts changed'],
  'raction.zone_saved': ['保存安全区', 'Zone saved'],
  'raction.zone_deleted': ['删除安全区', 'Zone deleted'],

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
