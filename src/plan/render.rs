//! How a [`Plan`] is shown: a terraform-like diff for people, JSON for programs.

use std::fmt::Write as _;

use serde_json::json;

use super::{Action, ActionKind, ImageSource, Intent, Plan, TemplateAction};
use crate::profile::model::ImageStrategy;

/// The diff, one block per action, and the summary line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    for warning in &plan.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    if let Some(pool) = &plan.pool {
        let _ = writeln!(out, "+ pool {pool}");
    }
    for mapping in &plan.mappings {
        let _ = writeln!(
            out,
            "+ pci mapping {} ({})",
            mapping.id,
            mapping.map.join(" ")
        );
    }
    for download in &plan.downloads {
        let _ = writeln!(
            out,
            "+ image {} on {} (download-url {})",
            download.volid,
            download.node,
            download.params.get("url").map_or("", String::as_str)
        );
    }
    render_templates(&mut out, plan);
    for name in &plan.adopt {
        let _ = writeln!(
            out,
            "  adopt {name} (found on Proxmox with this cluster's tag)"
        );
    }
    for action in &plan.actions {
        render_action(&mut out, plan, action);
    }
    for forget in &plan.forget {
        let _ = writeln!(
            out,
            "  forget {} (vmid {} is gone from Proxmox or no longer this cluster's; dropped from the state)",
            forget.vm, forget.vmid
        );
    }
    render_rolling(&mut out, plan);
    render_upgrade(&mut out, plan);
    render_replace(&mut out, plan);
    let _ = writeln!(
        out,
        "Plan: {} to create, {} to update, {} to replace, {} to destroy{}.",
        plan.count(ActionKind::Create),
        plan.count(ActionKind::Update),
        plan.count(ActionKind::Replace),
        plan.count(ActionKind::Destroy),
        global_counts(plan)
    );
    if plan.is_noop() && plan.upgrade.is_none() {
        match &plan.intent {
            Intent::Converge | Intent::ReplaceNode { .. } => {
                let _ = writeln!(out, "No changes: the cluster matches the profile.");
            }
            Intent::Down => {
                let _ = writeln!(
                    out,
                    "No changes: no VM of cluster {} is on Proxmox.",
                    plan.cluster
                );
            }
        }
    }
    out
}

/// The steps of a `replace-node`, in the order they run, and what is unavailable meanwhile.
fn render_replace(out: &mut String, plan: &Plan) {
    let Some(replace) = &plan.replace else {
        return;
    };
    let _ = writeln!(
        out,
        "Replace node {} ({}): {} steps, one at a time, journaled in the state (a re-run resumes){}",
        replace.node,
        replace.role.as_str(),
        replace.steps.len(),
        replace
            .resumes_at
            .map(|step| format!("; resumes at {}", step.as_str()))
            .unwrap_or_default()
    );
    for (number, step) in replace.steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:<3} {:<14} {}",
            format!("{}.", number + 1),
            step.as_str(),
            super::describe_step(*step)
        );
    }
    let _ = writeln!(
        out,
        "      unavailable: {} until it is Ready again{}",
        replace.node,
        if replace.role == crate::profile::model::Role::Server {
            "; etcd runs one member short meanwhile"
        } else {
            ""
        }
    );
}

/// The waves of disruptive actions, in the order they run.
fn render_rolling(out: &mut String, plan: &Plan) {
    if plan.rolling.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "Rolling: {} waves; each starts when the one before is back (started, guest agent answering)",
        plan.rolling.len()
    );
    render_waves(out, &plan.rolling);
}

/// Each wave: its VMs (what happens, whether they are drained) and what is unavailable.
fn render_waves(out: &mut String, waves: &[super::Wave]) {
    for wave in waves {
        for (position, member) in wave.vms.iter().enumerate() {
            let number = if position == 0 {
                format!("{}.", wave.number)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {number:<3} {} ({}), drain: {}",
                member.vm,
                member.why,
                if member.drain { "yes" } else { "no" }
            );
        }
        let _ = writeln!(out, "      unavailable: {}", wave.disruption);
    }
}

/// `; 8 PCI mappings and 1 image download to create` when the plan has any: the summary counts
/// every object `up` creates, not only VMs.
fn global_counts(plan: &Plan) -> String {
    let plural =
        |count: usize, what: &str| format!("{count} {what}{}", if count == 1 { "" } else { "s" });
    let mut parts = Vec::new();
    if plan.pool.is_some() {
        parts.push("1 pool".to_owned());
    }
    if !plan.mappings.is_empty() {
        parts.push(plural(plan.mappings.len(), "PCI mapping"));
    }
    if !plan.downloads.is_empty() {
        parts.push(plural(plan.downloads.len(), "image download"));
    }
    match parts.as_slice() {
        [] => String::new(),
        [one] => format!("; {one} to create"),
        [first @ .., last] => format!("; {} and {last} to create", first.join(", ")),
    }
}

/// The image strategy (unless `import`) and the templates built, kept or destroyed.
fn render_templates(out: &mut String, plan: &Plan) {
    if !plan.strategy.is_import() {
        let _ = writeln!(
            out,
            "  image strategy {}: one template per node from the image, each VM cloned from it",
            plan.strategy.as_str()
        );
    }
    for template in &plan.templates {
        let what = format!(
            "template {} (vmid {} on {})",
            template.name, template.vmid, template.node
        );
        match template.action {
            TemplateAction::Create => {
                let _ = writeln!(out, "+ {what}");
                for (key, value) in &template.params {
                    let _ = writeln!(out, "      {key}: {value}");
                }
            }
            TemplateAction::Keep => {
                let _ = writeln!(out, "  keep {what}");
            }
            TemplateAction::Destroy => {
                let _ = writeln!(out, "- {what}: after the VMs");
            }
        }
    }
}

/// The k3s upgrade phase 2 rolls after the VM changes: snapshot, then its waves.
fn render_upgrade(out: &mut String, plan: &Plan) {
    let Some(upgrade) = &plan.upgrade else {
        return;
    };
    let _ = writeln!(
        out,
        "k3s upgrade {} → {} ({}): {}{} waves, servers one at a time, then agents; each node drained, restarted on the new binary, Ready (and an etcd member) again, uncordoned",
        upgrade.from,
        upgrade.to,
        match upgrade.step {
            super::UpgradeStep::Minor => "next minor version",
            super::UpgradeStep::Patch | super::UpgradeStep::None => "same minor version",
        },
        if upgrade.snapshot {
            "etcd snapshot first, then "
        } else {
            ""
        },
        upgrade.waves.len()
    );
    render_waves(out, &upgrade.waves);
}

/// One action: its line, then what it sends.
fn render_action(out: &mut String, plan: &Plan, action: &Action) {
    let _ = write!(
        out,
        "{} {} (vmid {} on {})",
        action.kind().symbol(),
        action.vm(),
        action.vmid(),
        action.node()
    );
    if let Some(reason) = action.reason() {
        let _ = write!(out, ": {reason}");
    }
    out.push('\n');
    let indent = "      ";
    match action {
        Action::Create { params, resize, .. } | Action::Replace { params, resize, .. } => {
            if let Some(ImageSource::Template {
                template,
                name,
                strategy,
            }) = plan.vm(action.vm()).map(|vm| &vm.image)
            {
                let _ = writeln!(
                    out,
                    "{indent}{} of template {name} (vmid {template}), then:",
                    match strategy {
                        ImageStrategy::FullClone => "full clone",
                        ImageStrategy::LinkedClone => "linked clone",
                        ImageStrategy::Import => "clone",
                    }
                );
            }
            for (key, value) in params {
                let _ = writeln!(out, "{indent}{key}: {value}");
            }
            for resize in resize {
                let _ = writeln!(out, "{indent}resize {} → {}", resize.disk, resize.size);
            }
        }
        Action::Update {
            changes,
            was,
            delete,
            resize,
            restart,
            ..
        } => {
            for (key, value) in changes {
                let old = was.get(key).map_or("(unset)", String::as_str);
                let _ = writeln!(out, "{indent}~ {key}: {old} → {value}");
            }
            for key in delete {
                let _ = writeln!(out, "{indent}- {key}");
            }
            for resize in resize {
                let _ = writeln!(out, "{indent}~ resize {} → {}", resize.disk, resize.size);
            }
            if *restart {
                let _ = writeln!(out, "{indent}(restart to apply)");
            }
        }
        Action::Destroy { .. } => {}
    }
}

/// `{"actions":[{"action","vm","node","vmid","params"}…], …}`, plus `"forget"` when a down
/// plan drops records without touching their VM.
pub fn render_json(plan: &Plan) -> serde_json::Value {
    let mut rendered = json!({
        "cluster": plan.cluster,
        "actions": plan.actions,
        "downloads": plan.downloads,
        "mappings": plan.mappings,
        "pool": plan.pool,
        "adopt": plan.adopt,
        "warnings": plan.warnings,
        "summary": {
            "create": plan.count(ActionKind::Create),
            "update": plan.count(ActionKind::Update),
            "replace": plan.count(ActionKind::Replace),
            "destroy": plan.count(ActionKind::Destroy),
        },
    });
    if !plan.rolling.is_empty()
        && let Some(object) = rendered.as_object_mut()
    {
        object.insert("rolling".to_owned(), json!(plan.rolling));
    }
    if let Some(upgrade) = &plan.upgrade
        && let Some(object) = rendered.as_object_mut()
    {
        object.insert("upgrade".to_owned(), json!(upgrade));
    }
    if let Some(replace) = &plan.replace
        && let Some(object) = rendered.as_object_mut()
    {
        object.insert("replace".to_owned(), json!(replace));
    }
    if (!plan.strategy.is_import() || !plan.templates.is_empty())
        && let Some(object) = rendered.as_object_mut()
    {
        object.insert("strategy".to_owned(), json!(plan.strategy));
        object.insert("templates".to_owned(), json!(plan.templates));
    }
    // Only a down plan forgets; converge plans keep their shape.
    if !plan.forget.is_empty()
        && let Some(object) = rendered.as_object_mut()
    {
        object.insert("forget".to_owned(), json!(plan.forget));
    }
    rendered
}
