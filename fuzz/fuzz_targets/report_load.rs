//! Report JSON as `locktrace merge` and `locktrace gate` read it: load, merge with itself, gate with
//! budgets and itself as baseline, render. Bad input must be refused with an error, never a panic or an
//! absurd allocation.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use locktrace_report::gate::{self, Baseline, GateConfig};
use locktrace_report::{Report, merge, render_text};

const BUDGETS: &str = r#"
[[budget]]
expr = "*:hold:p99<=100ms"
[[budget]]
expr = "layers.lock:write:wait:max<=1s"
[[budget]]
expr = "*:wait:count>=1"
"#;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = Report::from_json(data, Path::new("fuzz.json")) else {
        return;
    };
    let Ok(merged) = merge(&[report.clone(), report.clone()]) else {
        return;
    };
    let config = GateConfig {
        budgets: gate::parse_budgets(BUDGETS, Path::new("budgets.toml"))
            .expect("the fixed budgets parse"),
        baseline: Some(Baseline {
            report: &report,
            tolerance_pct: 10.0,
        }),
        ..GateConfig::default()
    };
    let result = gate::evaluate(&merged, &config);
    let _ = result.render_text();
    let _ = render_text(&merged);
});
