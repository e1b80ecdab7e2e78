//! A small IAM evaluator for the CloudFormation templates, shared by
//! `tests/template_policy.rs` (role tables) and `tests/conformance.rs` (recorded requests).
//!
//! The templates are parsed as YAML with their CloudFormation short-form tags (`!Ref`, `!Sub`,
//! `!GetAtt`, `!If`, ...), turned into the long form (`{"Ref": ...}`), and every policy
//! statement is expanded over both branches of each `Fn::If`. [`Policy::decide`] then answers
//! "may this principal do this action on this resource?" the way IAM does for one policy:
//!
//! - an explicit Deny wins, but only counts when it applies in **every** branch of the template
//!   and its conditions are known to hold (a Deny that might be absent protects nothing);
//! - an Allow counts as soon as it applies in **any** branch and its conditions might hold
//!   (worst case);
//! - actions match case-insensitively with `*` and `?`; resources and ARNs case-sensitively;
//! - `NotAction` and `NotResource` are evaluated; `NotPrincipal` is refused (panic), so a
//!   template that starts using it fails loudly instead of being misjudged.
//!
//! [`decide_request`] combines an identity policy with a bucket policy: same account, either
//! may allow; across accounts, both must; an explicit Deny in either wins, and its Sid is
//! reported. A mock of IAM by necessity: no local server evaluates bucket policies or S3
//! condition keys (moto ignores both; see `moto.rs`).

use serde_json::{Map, Value as Json, json};
use std::collections::HashMap;
use std::path::PathBuf;

// ------------------------------------------------------------------------------------------
// Loading: YAML with CloudFormation tags -> JSON long form
// ------------------------------------------------------------------------------------------

pub fn repo_file(rel: &str) -> PathBuf {
    crate::paths::repo_root()
        .expect("repository root")
        .join(rel)
}

pub fn load_template(rel: &str) -> Json {
    let path = repo_file(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let yaml: serde_norway::Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    yaml_to_json(&yaml)
}

pub fn yaml_to_json(v: &serde_norway::Value) -> Json {
    use serde_norway::Value as Y;
    match v {
        Y::Null => Json::Null,
        Y::Bool(b) => Json::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => Json::String(s.clone()),
        Y::Sequence(items) => Json::Array(items.iter().map(yaml_to_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match yaml_to_json(k) {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, yaml_to_json(v));
            }
            Json::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = yaml_to_json(&t.value);
            let (key, value) = match name {
                "Ref" => ("Ref".to_string(), inner),
                "Condition" => ("Condition".to_string(), inner),
                "GetAtt" => {
                    let value = match inner {
                        Json::String(s) => {
                            let (res, attr) = s.split_once('.').unwrap_or((s.as_str(), ""));
                            json!([res, attr])
                        }
                        other => other,
                    };
                    ("Fn::GetAtt".to_string(), value)
                }
                other => (format!("Fn::{other}"), inner),
            };
            let mut m = Map::new();
            m.insert(key, value);
            Json::Object(m)
        }
    }
}

pub fn is_no_value(v: &Json) -> bool {
    v.get("Ref").and_then(Json::as_str) == Some("AWS::NoValue")
}

/// Every resolution of the `Fn::If`s inside `v`; `None` means "absent" (`AWS::NoValue`).
pub fn expand_ifs(v: &Json) -> Vec<Option<Json>> {
    expand_ifs_with(v, &HashMap::new())
}

/// Like [`expand_ifs`], but a condition named in `decided` takes only its branch: one
/// deployment's view of the template.
pub fn expand_ifs_with(v: &Json, decided: &HashMap<String, bool>) -> Vec<Option<Json>> {
    if is_no_value(v) {
        return vec![None];
    }
    let expand_ifs = |v: &Json| expand_ifs_with(v, decided);
    match v {
        Json::Object(m) => {
            if let Some(args) = m.get("Fn::If").and_then(Json::as_array) {
                assert!(m.len() == 1 && args.len() == 3, "malformed Fn::If: {v}");
                if let Some(value) = args[0].as_str().and_then(|c| decided.get(c)) {
                    return expand_ifs(&args[if *value { 1 } else { 2 }]);
                }
                let mut out = expand_ifs(&args[1]);
                out.extend(expand_ifs(&args[2]));
                return out;
            }
            let mut acc: Vec<Map<String, Json>> = vec![Map::new()];
            for (k, child) in m {
                let options = expand_ifs(child);
                let mut next = Vec::new();
                for partial in &acc {
                    for opt in &options {
                        let mut p = partial.clone();
                        if let Some(val) = opt {
                            p.insert(k.clone(), val.clone());
                        }
                        next.push(p);
                    }
                }
                acc = next;
            }
            acc.into_iter().map(|m| Some(Json::Object(m))).collect()
        }
        Json::Array(items) => {
            let mut acc: Vec<Vec<Json>> = vec![Vec::new()];
            for item in items {
                let options = expand_ifs(item);
                let mut next = Vec::new();
                for partial in &acc {
                    for opt in &options {
                        let mut p = partial.clone();
                        if let Some(val) = opt {
                            p.push(val.clone());
                        }
                        next.push(p);
                    }
                }
                acc = next;
            }
            acc.into_iter().map(|a| Some(Json::Array(a))).collect()
        }
        _ => vec![Some(v.clone())],
    }
}

// ------------------------------------------------------------------------------------------
// Rendering intrinsics to strings with placeholders
// ------------------------------------------------------------------------------------------

/// How `Ref`/`GetAtt` render: explicit substitutions first, then parameter defaults (when
/// non-empty), then `{Name}` placeholders.
pub struct Renderer {
    pub subs: HashMap<String, String>,
    pub param_defaults: HashMap<String, String>,
    /// Template conditions decided for one deployment; the others keep both branches.
    pub conditions: HashMap<String, bool>,
}

impl Renderer {
    pub fn new(template: &Json, subs: &[(&str, &str)]) -> Self {
        let mut param_defaults = HashMap::new();
        if let Some(params) = template.get("Parameters").and_then(Json::as_object) {
            for (name, p) in params {
                let default = match p.get("Default") {
                    Some(Json::String(s)) => s.clone(),
                    Some(Json::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                if !default.is_empty() {
                    param_defaults.insert(name.clone(), default);
                }
            }
        }
        let mut all: HashMap<String, String> = [
            ("AWS::Partition", "aws"),
            ("AWS::Region", "us-east-1"),
            ("AWS::AccountId", "123456789012"),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("AWS::StackName", "ecr-vault"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in subs {
            all.insert((*k).to_string(), (*v).to_string());
        }
        Renderer {
            subs: all,
            param_defaults,
            conditions: HashMap::new(),
        }
    }

    /// Decides these template conditions (see [`expand_ifs_with`]).
    pub fn with_conditions(mut self, conditions: &[(&str, bool)]) -> Self {
        for (k, v) in conditions {
            self.conditions.insert((*k).to_string(), *v);
        }
        self
    }

    pub fn name(&self, name: &str) -> String {
        if let Some(v) = self.subs.get(name) {
            return v.clone();
        }
        if let Some(v) = self.param_defaults.get(name) {
            return v.clone();
        }
        format!("{{{name}}}")
    }

    /// Renders a scalar or a list (after `Fn::If` expansion) to its string values.
    pub fn strings(&self, v: &Json) -> Vec<String> {
        if let Some(a) = v.get("Fn::Split").and_then(Json::as_array) {
            let sep = a[0].as_str().expect("Split separator");
            return self.string(&a[1]).split(sep).map(str::to_owned).collect();
        }
        match v {
            Json::Array(items) => items.iter().flat_map(|i| self.strings(i)).collect(),
            other => vec![self.string(other)],
        }
    }

    pub fn string(&self, v: &Json) -> String {
        match v {
            Json::String(s) => s.clone(),
            Json::Number(n) => n.to_string(),
            Json::Bool(b) => b.to_string(),
            Json::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                match k.as_str() {
                    "Ref" => self.name(arg.as_str().expect("Ref takes a name")),
                    "Fn::GetAtt" => {
                        let parts: Vec<&str> = arg
                            .as_array()
                            .expect("GetAtt list")
                            .iter()
                            .filter_map(Json::as_str)
                            .collect();
                        self.name(&parts.join("."))
                    }
                    "Fn::Sub" => self.sub(arg),
                    "Fn::Join" => {
                        let a = arg.as_array().expect("Join args");
                        let sep = a[0].as_str().unwrap_or("");
                        let parts: Vec<String> = self.strings(&a[1]);
                        parts.join(sep)
                    }
                    "Fn::Select" => {
                        // Only the idiom "account id of an ARN" is understood.
                        let a = arg.as_array().expect("Select args");
                        let split = a[1].get("Fn::Split").and_then(Json::as_array);
                        match (a[0].as_u64(), split) {
                            (Some(4), Some(s)) if s[0] == ":" => {
                                let arn = self.string(&s[1]);
                                // A concrete ARN gives its account; a placeholder stays one.
                                match arn.split(':').nth(4) {
                                    Some(account) => account.to_string(),
                                    None => format!("{arn}#account"),
                                }
                            }
                            _ => "{Select}".to_string(),
                        }
                    }
                    other => format!("{{{other}}}"),
                }
            }
            other => panic!("cannot render {other}"),
        }
    }

    pub fn sub(&self, arg: &Json) -> String {
        let (text, vars) = match arg {
            Json::String(s) => (s.as_str(), None),
            Json::Array(a) => (a[0].as_str().expect("Sub text"), a.get(1)),
            other => panic!("bad Fn::Sub {other}"),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("closing brace") + start;
            let var = &rest[start + 2..end];
            let value = match vars.and_then(|v| v.get(var)) {
                Some(v) => self.string(v),
                None => self.name(var),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

// ------------------------------------------------------------------------------------------
// Policy model and evaluator
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

/// One statement after `Fn::If` expansion and rendering.
#[derive(Clone, Debug)]
pub struct Stmt {
    pub sid: String,
    pub effect: Effect,
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    /// `NotResource`: `resources` lists what the statement does *not* cover.
    pub not_resource: bool,
    /// `None`: identity policy (no Principal element).
    pub principals: Option<Vec<String>>,
    /// operator -> key -> values
    pub conditions: Vec<(String, String, Vec<String>)>,
}

/// A statement as written: one alternative per template branch; `None` = absent there.
#[derive(Clone, Debug)]
pub struct Written {
    pub alternatives: Vec<Option<Stmt>>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub statements: Vec<Written>,
}

#[derive(Clone, Debug, Default)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub principal_arn: String,
    pub principal_account: String,
    /// Condition keys known for this request: `Some(v)` present, `None` known absent.
    /// Keys not listed are unknown.
    pub keys: HashMap<String, Option<String>>,
}

impl Request {
    pub fn new(action: &str, resource: &str) -> Self {
        let mut keys = HashMap::new();
        keys.insert("aws:SecureTransport".to_string(), Some("true".to_string()));
        Request {
            action: action.to_string(),
            resource: resource.to_string(),
            principal_arn: "{self}".to_string(),
            principal_account: "123456789012".to_string(),
            keys,
        }
    }
    pub fn by(mut self, principal_arn: &str, account: &str) -> Self {
        self.principal_arn = principal_arn.to_string();
        self.principal_account = account.to_string();
        self
    }
    pub fn with_key(mut self, key: &str, value: Option<&str>) -> Self {
        self.keys
            .insert(key.to_string(), value.map(|v| v.to_string()));
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    ExplicitlyDenied,
    ImplicitlyDenied,
}

/// IAM-style wildcard match: `*` any run, `?` one character.
pub fn glob(pattern: &str, text: &str, case_insensitive: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if case_insensitive {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

pub fn and(a: Tri, b: Tri) -> Tri {
    match (a, b) {
        (Tri::False, _) | (_, Tri::False) => Tri::False,
        (Tri::True, Tri::True) => Tri::True,
        _ => Tri::Unknown,
    }
}

impl Stmt {
    pub fn matches_action(&self, action: &str) -> bool {
        let hit = self.actions.iter().any(|p| glob(p, action, true));
        hit != self.not_action
    }

    pub fn matches_resource(&self, resource: &str) -> bool {
        let hit = self.resources.iter().any(|p| glob(p, resource, false));
        hit != self.not_resource
    }

    pub fn matches_principal(&self, req: &Request) -> bool {
        match &self.principals {
            None => true,
            Some(ps) => ps.iter().any(|p| {
                p == "*"
                    || glob(p, &req.principal_arn, false)
                    || *p == format!("arn:aws:iam::{}:root", req.principal_account)
            }),
        }
    }

    pub fn condition(&self, req: &Request) -> Tri {
        let mut acc = Tri::True;
        for (op, key, values) in &self.conditions {
            acc = and(acc, eval_condition(op, key, values, req));
        }
        acc
    }

    pub fn applies(&self, req: &Request) -> Tri {
        if !(self.matches_action(&req.action)
            && self.matches_resource(&req.resource)
            && self.matches_principal(req))
        {
            return Tri::False;
        }
        self.condition(req)
    }
}

pub fn eval_condition(op: &str, key: &str, values: &[String], req: &Request) -> Tri {
    let actual: Option<Option<String>> = match key {
        "aws:PrincipalArn" => Some(Some(req.principal_arn.clone())),
        "aws:PrincipalAccount" => Some(Some(req.principal_account.clone())),
        _ => req.keys.get(key).cloned(),
    };
    let Some(actual) = actual else {
        return Tri::Unknown;
    };
    let base = op.trim_end_matches("IfExists");
    if base == "Null" {
        let want_absent = values.iter().any(|v| v == "true");
        return if actual.is_none() == want_absent {
            Tri::True
        } else {
            Tri::False
        };
    }
    let Some(actual) = actual else {
        // Key absent: positive operators fail, negated ones match (IAM semantics);
        // ...IfExists operators match.
        let negated = base.contains("Not");
        return if negated || op.ends_with("IfExists") {
            Tri::True
        } else {
            Tri::False
        };
    };
    let r = match base {
        "StringEquals" | "ArnEquals" | "Bool" => values.contains(&actual),
        "StringEqualsIgnoreCase" => values.iter().any(|v| v.eq_ignore_ascii_case(&actual)),
        "StringLike" | "ArnLike" => values.iter().any(|v| glob(v, &actual, false)),
        "StringNotEquals" | "ArnNotEquals" => !values.contains(&actual),
        "StringNotLike" | "ArnNotLike" => !values.iter().any(|v| glob(v, &actual, false)),
        "NumericGreaterThan"
        | "NumericLessThan"
        | "NumericGreaterThanEquals"
        | "NumericLessThanEquals"
        | "NumericEquals" => {
            let a: f64 = match actual.parse() {
                Ok(a) => a,
                Err(_) => return Tri::Unknown,
            };
            let mut any = false;
            for v in values {
                let Ok(b) = v.parse::<f64>() else {
                    return Tri::Unknown;
                };
                any |= match base {
                    "NumericGreaterThan" => a > b,
                    "NumericLessThan" => a < b,
                    "NumericGreaterThanEquals" => a >= b,
                    "NumericLessThanEquals" => a <= b,
                    _ => a == b,
                };
            }
            any
        }
        _ => return Tri::Unknown,
    };
    if r { Tri::True } else { Tri::False }
}

impl Policy {
    /// The Sid of the first Deny that certainly applies to `req` (in every template branch).
    pub fn denying_sid(&self, req: &Request) -> Option<String> {
        self.statements.iter().find_map(|w| {
            let all = w.alternatives.iter().all(|alt| {
                alt.as_ref()
                    .is_some_and(|s| s.effect == Effect::Deny && s.applies(req) == Tri::True)
            });
            if all {
                w.alternatives
                    .iter()
                    .flatten()
                    .next()
                    .map(|s| s.sid.clone())
            } else {
                None
            }
        })
    }

    /// A policy from a JSON document (`{"Statement": [...]}`) written in this module's terms,
    /// e.g. an administrator's `Allow * on *`.
    pub fn from_json(name: &str, doc: &Json) -> Policy {
        let r = Renderer {
            subs: HashMap::new(),
            param_defaults: HashMap::new(),
            conditions: HashMap::new(),
        };
        policy_from_document(&r, name, doc)
    }

    pub fn decide(&self, req: &Request) -> Decision {
        let denied = self.statements.iter().any(|w| {
            w.alternatives.iter().all(|alt| {
                alt.as_ref()
                    .is_some_and(|s| s.effect == Effect::Deny && s.applies(req) == Tri::True)
            })
        });
        if denied {
            return Decision::ExplicitlyDenied;
        }
        let allowed = self.statements.iter().any(|w| {
            w.alternatives
                .iter()
                .flatten()
                .any(|s| s.effect == Effect::Allow && s.applies(req) != Tri::False)
        });
        if allowed {
            Decision::Allowed
        } else {
            Decision::ImplicitlyDenied
        }
    }

    pub fn allow_statements(&self) -> impl Iterator<Item = &Stmt> {
        self.statements
            .iter()
            .flat_map(|w| w.alternatives.iter().flatten())
            .filter(|s| s.effect == Effect::Allow)
    }

    /// Appends a statement given in CloudFormation JSON (the negative tests use this).
    pub fn inject(&mut self, r: &Renderer, statement: Json) {
        self.statements.push(parse_statement(r, &statement));
    }

    pub fn remove_denies(&mut self) {
        self.statements.retain(|w| {
            !w.alternatives
                .iter()
                .flatten()
                .any(|s| s.effect == Effect::Deny)
        });
    }
}

pub fn string_list(r: &Renderer, v: Option<&Json>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(v) => r.strings(v),
    }
}

pub fn parse_statement(r: &Renderer, written: &Json) -> Written {
    let alternatives = expand_ifs_with(written, &r.conditions)
        .into_iter()
        .map(|alt| alt.map(|s| render_statement(r, &s)))
        .collect();
    Written { alternatives }
}

pub fn render_statement(r: &Renderer, s: &Json) -> Stmt {
    assert!(
        s.get("NotPrincipal").is_none(),
        "NotPrincipal is not supported by this checker: {s}"
    );
    let effect = match s.get("Effect").and_then(Json::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        other => panic!("statement without a valid Effect ({other:?}): {s}"),
    };
    let (actions, not_action) = match (s.get("Action"), s.get("NotAction")) {
        (Some(a), None) => (string_list(r, Some(a)), false),
        (None, Some(a)) => (string_list(r, Some(a)), true),
        _ => panic!("statement needs exactly one of Action/NotAction: {s}"),
    };
    let principals = s.get("Principal").map(|p| match p {
        Json::String(star) => vec![star.clone()],
        Json::Object(m) => {
            for k in m.keys() {
                assert!(
                    k == "AWS" || k == "Service",
                    "principal type {k} not supported"
                );
            }
            m.get("AWS").map(|v| r.strings(v)).unwrap_or_default()
        }
        other => panic!("bad Principal {other}"),
    });
    let mut conditions = Vec::new();
    if let Some(Json::Object(ops)) = s.get("Condition") {
        for (op, keys) in ops {
            for (key, values) in keys.as_object().expect("condition block") {
                conditions.push((op.clone(), key.clone(), r.strings(values)));
            }
        }
    }
    Stmt {
        sid: s
            .get("Sid")
            .and_then(Json::as_str)
            .unwrap_or("(no Sid)")
            .to_string(),
        effect,
        actions,
        not_action,
        not_resource: s.get("NotResource").is_some(),
        resources: string_list(r, s.get("Resource").or(s.get("NotResource"))),
        principals,
        conditions,
    }
}

pub fn policy_from_document(r: &Renderer, name: &str, doc: &Json) -> Policy {
    let statements = match doc.get("Statement") {
        Some(Json::Array(items)) => items.iter().map(|s| parse_statement(r, s)).collect(),
        Some(single) => vec![parse_statement(r, single)],
        None => panic!("{name}: policy document without Statement"),
    };
    Policy {
        name: name.to_string(),
        statements,
    }
}

pub fn resources(template: &Json) -> &Map<String, Json> {
    template
        .get("Resources")
        .and_then(Json::as_object)
        .expect("template has Resources")
}

/// All inline statements of an `AWS::IAM::Role`, plus any `AWS::IAM::Policy` attached to it.
/// Managed policies would be invisible here, so they are refused.
pub fn role_policy(template: &Json, r: &Renderer, role: &str) -> Policy {
    let res = resources(template);
    let role_res = res
        .get(role)
        .unwrap_or_else(|| panic!("no resource {role}"));
    assert_eq!(role_res["Type"], "AWS::IAM::Role", "{role} is not a role");
    let props = &role_res["Properties"];
    assert!(
        props.get("ManagedPolicyArns").is_none(),
        "{role}: managed policies can't be checked here; use inline statements"
    );
    let mut statements = Vec::new();
    for p in props
        .get("Policies")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let doc = &p["PolicyDocument"];
        statements.extend(policy_from_document(r, role, doc).statements);
    }
    for (name, other) in res {
        if other["Type"] == "AWS::IAM::Policy" || other["Type"] == "AWS::IAM::ManagedPolicy" {
            let attached = other["Properties"]["Roles"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|x| x.get("Ref").and_then(Json::as_str) == Some(role));
            if attached {
                let doc = &other["Properties"]["PolicyDocument"];
                statements.extend(policy_from_document(r, name, doc).statements);
            }
        }
    }
    Policy {
        name: role.to_string(),
        statements,
    }
}

pub fn bucket_policy(template: &Json, r: &Renderer, logical_id: &str) -> Policy {
    let res = &resources(template)[logical_id];
    assert_eq!(res["Type"], "AWS::S3::BucketPolicy");
    policy_from_document(r, logical_id, &res["Properties"]["PolicyDocument"])
}

/// The decision for `req` made by `principal` under its identity policy and the bucket
/// policy, as S3 makes it: an explicit Deny in either wins; within the bucket's account either
/// policy may allow; across accounts both must. The `String` names the denying statement
/// (`policy/Sid`), or what is missing.
pub fn decide_request(
    identity: &Policy,
    bucket: &Policy,
    req: &Request,
    bucket_account: &str,
) -> (Decision, String) {
    for p in [bucket, identity] {
        if let Some(sid) = p.denying_sid(req) {
            return (Decision::ExplicitlyDenied, format!("{}/{sid}", p.name));
        }
    }
    let by_identity = identity.decide(req) == Decision::Allowed;
    let by_bucket = bucket.decide(req) == Decision::Allowed;
    let same_account = req.principal_account == bucket_account;
    match (same_account, by_identity, by_bucket) {
        (true, true, _) | (true, _, true) | (false, true, true) => {
            (Decision::Allowed, String::new())
        }
        (false, false, _) => (
            Decision::ImplicitlyDenied,
            format!("{}: no Allow", identity.name),
        ),
        (false, true, false) => (
            Decision::ImplicitlyDenied,
            format!("{}: no Allow for another account", bucket.name),
        ),
        (true, false, false) => (Decision::ImplicitlyDenied, "no Allow".to_string()),
    }
}
