//! Gate budgets as `locktrace gate --budgets FILE` and `--budget EXPR` read them: a budgets file, one
//! expression, one duration. Errors are returned, never panics.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use locktrace_report::gate::{self, Budget};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(budgets) = gate::parse_budgets(text, Path::new("budgets.toml")) {
        for b in budgets {
            // What a budget prints must read back as the same budget.
            let again: Budget = b.expr.parse().expect("a parsed budget's expression parses");
            assert_eq!(again, b, "budget {:?} reads back differently", b.expr);
        }
    }
    let _ = text.parse::<Budget>();
    let _ = gate::parse_duration(text);
});
