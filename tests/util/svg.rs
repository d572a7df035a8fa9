//! Reading the SVG that `sockloop bench --plot` draws: its text and its lines, as
//! plotters writes them (`<text>`, `<polyline points="x,y x,y ">`, `<rect>`).

/// What a test looks at in a plot.
#[derive(Debug)]
pub struct Svg {
    /// Every `<text>`'s content, trimmed.
    pub texts: Vec<String>,
    /// Every `<polyline>`: its stroke colour (`#1F77B4`) and its points, in pixels.
    pub polylines: Vec<(String, Vec<(f64, f64)>)>,
    /// Every filled `<rect>`: its fill colour and opacity.
    pub rects: Vec<(String, String)>,
}

impl Svg {
    /// Parses `text`, failing the test unless it is well-formed SVG with a size.
    pub fn parse(text: &str) -> Svg {
        let doc = roxmltree::Document::parse(text).unwrap_or_else(|e| panic!("not XML: {e}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg", "the root is not <svg>");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        for a in ["width", "height", "viewBox"] {
            assert!(root.attribute(a).is_some(), "<svg> has no {a}");
        }
        let mut svg = Svg {
            texts: Vec::new(),
            polylines: Vec::new(),
            rects: Vec::new(),
        };
        for n in root.descendants().filter(|n| n.is_element()) {
            match n.tag_name().name() {
                "text" => svg
                    .texts
                    .push(n.text().unwrap_or_default().trim().to_string()),
                "polyline" => {
                    let points = n
                        .attribute("points")
                        .expect("a polyline has points")
                        .split_whitespace()
                        .map(|p| {
                            let (x, y) = p.split_once(',').expect("x,y");
                            (x.parse().expect("x"), y.parse().expect("y"))
                        })
                        .collect();
                    let stroke = n.attribute("stroke").unwrap_or_default().to_string();
                    svg.polylines.push((stroke, points));
                }
                "rect" if n.attribute("fill").is_some_and(|f| f != "none") => svg.rects.push((
                    n.attribute("fill").unwrap_or_default().to_string(),
                    n.attribute("opacity").unwrap_or("1").to_string(),
                )),
                _ => {}
            }
        }
        svg
    }

    /// Whether some text is `t`.
    pub fn has_text(&self, t: &str) -> bool {
        self.texts.iter().any(|x| x == t)
    }

    /// The lines of colour `stroke` with at least `min` points (legend samples have 2).
    pub fn lines(&self, stroke: &str, min: usize) -> Vec<&Vec<(f64, f64)>> {
        self.polylines
            .iter()
            .filter(|(s, p)| s == stroke && p.len() >= min)
            .map(|(_, p)| p)
            .collect()
    }
}

/// `1881140` as a plot writes it, `1,881,140`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
