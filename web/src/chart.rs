//! Charts drawn on the server as inline SVG (no script, no library): the
//! shares of a branch's jobs per revision as stacked columns, and one
//! stacked bar of shares. Every part has a `<title>` (a tooltip, and what a
//! screen reader reads), and the whole an `aria-label`.

use bbb_migration::compute::{HistoryPoint, Shares};
use maud::{Markup, html};

/// The three places in stacking order (bottom first): CSS class and name.
const PLACES: [(&str, &str); 3] = [
    ("native", "native"),
    ("bridged", "bridged"),
    ("buildbot", "Buildbot only"),
];

fn parts(s: &Shares<f64>) -> [f64; 3] {
    [s.native, s.bridged, s.buildbot_only]
}

fn counts(s: &Shares<usize>) -> [usize; 3] {
    [s.native, s.bridged, s.buildbot_only]
}

/// A percentage for people: `45%`.
pub(crate) fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The first 12 characters of a revision.
pub(crate) fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// Stacked columns, one per revision (oldest left), of the shares of jobs
/// native, bridged and Buildbot only; `width`×`height` in CSS pixels.
pub(crate) fn history(points: &[HistoryPoint], width: u32, height: u32, label: &str) -> Markup {
    let n = points.len().max(1) as f64;
    let (w, h) = (f64::from(width), f64::from(height));
    let col = w / n;
    let gap = if col > 6.0 { 1.0 } else { 0.0 };
    let summary = match (points.first(), points.last()) {
        (Some(first), Some(last)) => format!(
            "{label}: {} revisions; native {} on the first, {} on the last",
            points.len(),
            pct(first.shares.native),
            pct(last.shares.native)
        ),
        _ => format!("{label}: no revisions yet"),
    };
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(summary)
            width=(width) height=(height) viewBox={"0 0 " (width) " " (height)}
            preserveAspectRatio="none" {
            title { (summary) }
            rect.frame x="0" y="0" width=(width) height=(height) {}
            @for (i, p) in points.iter().enumerate() {
                @let x = i as f64 * col;
                g {
                    title {
                        (short(&p.revision)) ": " (p.counts.jobs) " jobs, "
                        (p.counts.native) " native, " (p.counts.bridged) " bridged, "
                        (p.counts.buildbot_only) " Buildbot only"
                    }
                    @let mut y = h;
                    @for (share, (class, _)) in parts(&p.shares).into_iter().zip(PLACES) {
                        @let part = share * h;
                        @if part > 0.0 {
                            @let top = { y -= part; y };
                            rect class=(class) x=(fmt(x)) y=(fmt(top))
                                width=(fmt((col - gap).max(0.5))) height=(fmt(part)) {}
                        }
                    }
                }
            }
        }
    }
}

/// One stacked bar of `shares` (with `counts` in its title).
pub(crate) fn bar(shares: &Shares<f64>, counts_of: &Shares<usize>, width: u32) -> Markup {
    let c = counts(counts_of);
    let summary = format!(
        "{} native, {} bridged, {} Buildbot only of {} jobs",
        c[0], c[1], c[2], counts_of.jobs
    );
    let w = f64::from(width);
    html! {
        svg.bar xmlns="http://www.w3.org/2000/svg" role="img" aria-label=(summary)
            width=(width) height="12" viewBox={"0 0 " (width) " 12"} {
            title { (summary) }
            rect.frame x="0" y="0" width=(width) height="12" {}
            @let mut x = 0.0;
            @for (share, (class, _)) in parts(shares).into_iter().zip(PLACES) {
                @if share > 0.0 {
                    @let left = { let l = x; x += share * w; l };
                    rect class=(class) x=(fmt(left)) y="0" width=(fmt(share * w)) height="12" {}
                }
            }
        }
    }
}

/// The legend of both charts.
pub(crate) fn legend() -> Markup {
    html! {
        ul.legend aria-label="legend" {
            @for (class, name) in PLACES {
                li { span class={"swatch " (class)} {} (name) }
            }
        }
    }
}

/// A coordinate with two decimals at most.
fn fmt(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rev: &str, native: usize, bridged: usize, bb: usize) -> HistoryPoint {
        let jobs = native + bridged + bb;
        let f = |n: usize| n as f64 / jobs as f64;
        HistoryPoint {
            revision: rev.into(),
            time: 0,
            counts: Shares {
                jobs,
                native,
                bridged,
                buildbot_only: bb,
            },
            shares: Shares {
                jobs: 1.0,
                native: f(native),
                bridged: f(bridged),
                buildbot_only: f(bb),
            },
        }
    }

    #[test]
    fn columns_stack_the_shares_from_the_bottom() {
        let svg = history(
            &[point("aaa", 1, 1, 2), point("<b>", 4, 0, 0)],
            100,
            40,
            "demo",
        )
        .into_string();
        // First column: native 10 px at the bottom, bridged above, Buildbot on top.
        assert!(svg.contains(r#"<rect class="native" x="0" y="30" width="49" height="10">"#));
        assert!(svg.contains(r#"<rect class="bridged" x="0" y="20" width="49" height="10">"#));
        assert!(svg.contains(r#"<rect class="buildbot" x="0" y="0" width="49" height="20">"#));
        assert!(svg.contains(r#"<rect class="native" x="50" y="0" width="49" height="40">"#));
        assert!(svg.contains("&lt;b&gt;: 4 jobs"));
        assert!(svg.contains("native 25% on the first, 100% on the last"));
        assert_eq!(fmt(1.50), "1.5");
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
    }
}
