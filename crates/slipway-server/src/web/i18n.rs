//! The dashboard's words in English and Simplified Chinese: one catalogue each, the same keys
//! (a test holds them to it), chosen by a `lang` cookie (`?lang=zh`) or `Accept-Language`.

/// A language of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Zh,
}

const EN: &[(&str, &str)] = &[
    ("nav.label", "Main"),
    ("nav.overview", "Overview"),
    ("nav.pipelines", "Pipelines"),
    ("pipelines.title", "Pipelines"),
    ("pipelines.all", "all"),
    ("pipelines.filter", "Filter"),
    ("pipelines.none", "No pipeline matches."),
    ("pipelines.cancel", "Cancel"),
    ("pipelines.retry", "Retry failed jobs"),
    ("pipelines.graph", "Stages"),
    ("pipelines.jobs", "Jobs"),
    ("pipelines.reload", "The page shows the pipeline as it was: reload it to follow."),
    ("pipelines.canceled", "Canceled"),
    ("pipelines.retried", "Failed jobs run again"),
    ("pipelines.play", "Run"),
    ("pipelines.played", "The manual job starts"),
    ("col.ref", "Ref"),
    ("col.reason", "Reason"),
    ("overview.approve", "Approve"),
    ("overview.confirm_approve", "Approve release"),
    ("overview.approved", "Approved"),
    ("overview.approve_failed", "Not approved"),
    ("nav.alerts", "Alerts"),
    ("alerts.title", "Alerts and notifications"),
    ("alerts.rules", "Alert rules"),
    ("alerts.group", "Group"),
    ("alerts.expr", "Expression"),
    ("alerts.no_rules", "No alert rule: add one to the server's --rules or a project's alerts:."),
    ("alerts.silences", "Silences"),
    ("alerts.matchers", "Matchers"),
    ("alerts.ends", "Ends"),
    ("alerts.comment", "Comment"),
    ("alerts.no_silences", "No silence."),
    ("alerts.deliveries", "Deliveries"),
    ("alerts.to", "To"),
    ("alerts.last_error", "Last error"),
    ("alerts.no_deliveries", "Nothing was sent yet."),
    ("status.inactive", "inactive"),
    ("history.title", "Release history"),
    ("col.trigger", "Trigger"),
    ("col.job", "Job"),
    ("col.stage", "Stage"),
    ("col.agent", "Agent"),
    ("col.why", "Why"),
    ("log.raw", "Download the raw log"),
    ("log.first_error", "First error at line"),
    ("log.page", "Page"),
    ("log.search", "Search the log"),
    ("log.find", "Find"),
    ("log.matches", "matching lines"),
    ("log.first_200", "the first 200"),
    ("status.created", "created"),
    ("status.manual", "manual"),
    ("nav.environments", "Environments"),
    ("nav.signed_in_as", "Signed in as"),
    ("nav.sign_out", "Sign out"),
    ("nav.other_language", "中文"),
    ("login.title", "Sign in to slipway"),
    ("login.user", "User"),
    ("login.password", "Password"),
    ("login.submit", "Sign in"),
    ("login.failed", "Wrong user name or password."),
    ("login.throttled", "Too many failed sign-ins: try again later."),
    ("overview.title", "Overview"),
    ("overview.projects", "Projects"),
    ("overview.no_projects", "No projects yet: add one with `slipway project add`."),
    ("overview.no_pipeline", "No pipeline on its default branch yet."),
    ("overview.environments", "Environments"),
    ("overview.alerts", "Firing alerts"),
    ("overview.no_alerts", "Nothing is firing."),
    ("overview.waiting", "Waiting for approval"),
    ("overview.nothing_waits", "Nothing waits."),
    ("env.title", "Environments"),
    ("env.none", "No environment is deployed yet."),
    ("env.rollback_title", "Rollback"),
    ("env.nothing_to_roll_back_to", "no earlier healthy release"),
    ("env.rollback", "Roll back"),
    ("env.confirm_rollback", "Roll back"),
    ("env.rolled_back", "Rolled back"),
    ("env.rollback_failed", "The rollback failed"),
    ("col.project", "Project"),
    ("col.pipeline", "Pipeline"),
    ("col.status", "Status"),
    ("col.duration", "Duration"),
    ("col.commit", "Commit"),
    ("col.author", "Author"),
    ("col.when", "When"),
    ("col.alert", "Alert"),
    ("col.state", "State"),
    ("col.labels", "Labels"),
    ("col.summary", "Summary"),
    ("col.environment", "Environment"),
    ("col.release", "Release"),
    ("col.version", "Version"),
    ("col.by", "By"),
    ("col.current_version", "Current version"),
    ("col.last_update", "Last update"),
    ("col.instances", "Healthy/total"),
    ("col.url", "URL"),
    ("col.rollback_to", "A rollback returns to"),
    ("col.action", "Action"),
    ("status.success", "success"),
    ("status.failed", "failed"),
    ("status.running", "running"),
    ("status.pending", "pending"),
    ("status.canceled", "canceled"),
    ("status.skipped", "skipped"),
    ("status.healthy", "healthy"),
    ("status.degraded", "degraded"),
    ("status.deploying", "deploying"),
    ("status.waiting", "waiting"),
    ("status.firing", "firing"),
    ("status.rolled_back", "rolled back"),
    ("status.unknown", "unknown"),
    ("error.forbidden", "You may not do that"),
    ("error.not_found", "There is no such page."),
];

const ZH: &[(&str, &str)] = &[
    ("nav.label", "主导航"),
    ("nav.overview", "概览"),
    ("nav.pipelines", "流水线"),
    ("pipelines.title", "流水线"),
    ("pipelines.all", "全部"),
    ("pipelines.filter", "筛选"),
    ("pipelines.none", "没有符合条件的流水线。"),
    ("pipelines.cancel", "取消"),
    ("pipelines.retry", "重试失败的作业"),
    ("pipelines.graph", "阶段"),
    ("pipelines.jobs", "作业"),
    ("pipelines.reload", "页面显示的是打开时的状态：刷新以跟进。"),
    ("pipelines.canceled", "已取消"),
    ("pipelines.retried", "失败的作业已重新运行"),
    ("pipelines.play", "运行"),
    ("pipelines.played", "手动作业已开始"),
    ("col.ref", "分支/标签"),
    ("col.reason", "原因类型"),
    ("overview.approve", "批准"),
    ("overview.confirm_approve", "批准发布"),
    ("overview.approved", "已批准"),
    ("overview.approve_failed", "未能批准"),
    ("nav.alerts", "告警"),
    ("alerts.title", "告警与通知"),
    ("alerts.rules", "告警规则"),
    ("alerts.group", "分组"),
    ("alerts.expr", "表达式"),
    ("alerts.no_rules", "没有告警规则：在服务器的 --rules 或项目的 alerts: 中添加。"),
    ("alerts.silences", "静默"),
    ("alerts.matchers", "匹配条件"),
    ("alerts.ends", "结束时间"),
    ("alerts.comment", "备注"),
    ("alerts.no_silences", "没有静默。"),
    ("alerts.deliveries", "发送记录"),
    ("alerts.to", "发送到"),
    ("alerts.last_error", "最近的错误"),
    ("alerts.no_deliveries", "还没有发送过通知。"),
    ("status.inactive", "未触发"),
    ("history.title", "发布历史"),
    ("col.trigger", "触发方式"),
    ("col.job", "作业"),
    ("col.stage", "阶段"),
    ("col.agent", "执行代理"),
    ("col.why", "原因"),
    ("log.raw", "下载原始日志"),
    ("log.first_error", "第一个错误在第"),
    ("log.page", "页"),
    ("log.search", "搜索日志"),
    ("log.find", "查找"),
    ("log.matches", "行匹配"),
    ("log.first_200", "只显示前 200 行"),
    ("status.created", "已创建"),
    ("status.manual", "手动"),
    ("nav.environments", "环境"),
    ("nav.signed_in_as", "已登录："),
    ("nav.sign_out", "退出"),
    ("nav.other_language", "English"),
    ("login.title", "登录 slipway"),
    ("login.user", "用户名"),
    ("login.password", "密码"),
    ("login.submit", "登录"),
    ("login.failed", "用户名或密码错误。"),
    ("login.throttled", "登录失败次数过多，请稍后再试。"),
    ("overview.title", "概览"),
    ("overview.projects", "项目"),
    ("overview.no_projects", "还没有项目：用 `slipway project add` 添加。"),
    ("overview.no_pipeline", "默认分支上还没有流水线。"),
    ("overview.environments", "环境"),
    ("overview.alerts", "正在触发的告警"),
    ("overview.no_alerts", "没有正在触发的告警。"),
    ("overview.waiting", "等待审批"),
    ("overview.nothing_waits", "没有等待中的部署。"),
    ("env.title", "环境"),
    ("env.none", "还没有部署任何环境。"),
    ("env.rollback_title", "回滚"),
    ("env.nothing_to_roll_back_to", "没有更早的健康版本"),
    ("env.rollback", "回滚"),
    ("env.confirm_rollback", "确认回滚"),
    ("env.rolled_back", "已回滚"),
    ("env.rollback_failed", "回滚失败"),
    ("col.project", "项目"),
    ("col.pipeline", "流水线"),
    ("col.status", "状态"),
    ("col.duration", "耗时"),
    ("col.commit", "提交"),
    ("col.author", "作者"),
    ("col.when", "时间"),
    ("col.alert", "告警"),
    ("col.state", "状态"),
    ("col.labels", "标签"),
    ("col.summary", "摘要"),
    ("col.environment", "环境"),
    ("col.release", "发布"),
    ("col.version", "版本"),
    ("col.by", "发起人"),
    ("col.current_version", "当前部署版本"),
    ("col.last_update", "最后更新时间"),
    ("col.instances", "健康/总数"),
    ("col.url", "地址"),
    ("col.rollback_to", "回滚目标版本"),
    ("col.action", "操作"),
    ("status.success", "成功"),
    ("status.failed", "失败"),
    ("status.running", "运行中"),
    ("status.pending", "等待中"),
    ("status.canceled", "已取消"),
    ("status.skipped", "已跳过"),
    ("status.healthy", "健康"),
    ("status.degraded", "降级"),
    ("status.deploying", "部署中"),
    ("status.waiting", "等待中"),
    ("status.firing", "触发中"),
    ("status.rolled_back", "已回滚"),
    ("status.unknown", "未知"),
    ("error.forbidden", "你没有权限执行此操作"),
    ("error.not_found", "页面不存在。"),
];

impl Lang {
    /// From a `lang` cookie or query value, else `Accept-Language` (any `zh` first wins).
    pub fn pick(explicit: Option<&str>, accept: Option<&str>) -> Lang {
        match explicit {
            Some(l) if l.starts_with("zh") => return Lang::Zh,
            Some(l) if l.starts_with("en") => return Lang::En,
            _ => {}
        }
        let accept = accept.unwrap_or("");
        let first = accept
            .split(',')
            .map(|p| p.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .find(|p| p.starts_with("zh") || p.starts_with("en"));
        match first {
            Some(p) if p.starts_with("zh") => Lang::Zh,
            _ => Lang::En,
        }
    }

    fn table(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::En => EN,
            Lang::Zh => ZH,
        }
    }

    /// The word for `key` (the key itself if a catalogue lacks it; a test makes sure none does).
    pub fn s(&self, key: &str) -> &'static str {
        self.table().iter().find(|(k, _)| *k == key).map(|(_, v)| *v).unwrap_or("?")
    }

    /// A status word (`success`, `healthy`, …), or the status itself.
    pub fn status(&self, status: &str) -> String {
        let key = format!("status.{status}");
        match self.table().iter().find(|(k, _)| *k == key) {
            Some((_, v)) => v.to_string(),
            None => status.replace('_', " "),
        }
    }

    pub fn lang_tag(&self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    pub fn other_lang(&self) -> &'static str {
        match self {
            Lang::En => "zh",
            Lang::Zh => "en",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_have_the_same_keys_and_no_empty_word() {
        fn keys(t: &[(&'static str, &'static str)]) -> Vec<&'static str> {
            let mut k: Vec<&'static str> = t.iter().map(|(k, _)| *k).collect();
            k.sort();
            k
        }
        assert_eq!(keys(EN), keys(ZH), "the catalogues differ");
        let mut k = keys(EN);
        k.dedup();
        assert_eq!(k.len(), EN.len(), "a key is twice in a catalogue");
        assert!(EN.iter().chain(ZH).all(|(_, v)| !v.is_empty()));
        // Every key the templates use is in the catalogues.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/templates");
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap();
            for part in text.split("t.s(\"").skip(1) {
                let key = part.split('"').next().unwrap();
                assert!(EN.iter().any(|(k, _)| *k == key), "{}: `{key}` is in no catalogue", f.path().display());
            }
        }
    }

    #[test]
    fn the_language_comes_from_the_switch_then_the_browser() {
        assert_eq!(Lang::pick(None, Some("zh-CN,zh;q=0.9,en;q=0.8")), Lang::Zh);
        assert_eq!(Lang::pick(None, Some("de-DE, en-US;q=0.7")), Lang::En);
        assert_eq!(Lang::pick(Some("en"), Some("zh-CN")), Lang::En);
        assert_eq!(Lang::pick(Some("zh"), None), Lang::Zh);
        assert_eq!(Lang::Zh.s("col.current_version"), "当前部署版本");
        assert_eq!(Lang::En.status("rolled_back"), "rolled back");
    }
}
