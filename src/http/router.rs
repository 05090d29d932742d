//! Path and method matching over [`ROUTES`], built once at start.

use http::Method;

use super::routes::{ROUTES, Route};

/// A matched route and the path parameters it captured.
#[derive(Debug)]
pub struct Matched {
    pub route: &'static Route,
    pub params: Vec<(String, String)>,
}

/// Why no route matched.
#[derive(Debug, PartialEq, Eq)]
pub enum Miss {
    NotFound,
    /// The path exists for these methods.
    MethodNotAllowed(String),
}

#[derive(Debug)]
pub struct Router {
    paths: matchit::Router<usize>,
    /// `groups[i]`: the routes sharing one path template.
    groups: Vec<Vec<&'static Route>>,
}

impl Router {
    /// # Panics
    /// When the table holds conflicting templates: a programming error caught by every test.
    #[must_use]
    pub fn new() -> Self {
        let mut paths = matchit::Router::new();
        let mut groups: Vec<Vec<&'static Route>> = Vec::new();
        let mut templates: Vec<&'static str> = Vec::new();
        for route in ROUTES {
            if let Some(index) = templates.iter().position(|t| *t == route.path) {
                assert!(
                    !groups[index].iter().any(|r| r.method == route.method),
                    "duplicate route {} {}",
                    route.method,
                    route.path
                );
                groups[index].push(route);
            } else {
                paths
                    .insert(route.path, groups.len())
                    .unwrap_or_else(|e| panic!("route {}: {e}", route.path));
                templates.push(route.path);
                groups.push(vec![route]);
            }
        }
        Self { paths, groups }
    }

    /// Finds the route for `method` and `path`. `HEAD` matches `GET` routes.
    ///
    /// # Errors
    /// No path matched, or the path exists for other methods only.
    pub fn find(&self, method: &Method, path: &str) -> Result<Matched, Miss> {
        let found = self.paths.at(path).map_err(|_| Miss::NotFound)?;
        let group = &self.groups[*found.value];
        let wanted = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match group.iter().find(|r| r.method == *wanted) {
            Some(route) => Ok(Matched {
                route,
                params: found
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }),
            None => {
                let mut allow: Vec<&str> = group.iter().map(|r| r.method.as_str()).collect();
                if allow.contains(&"GET") {
                    allow.push("HEAD");
                }
                Err(Miss::MethodNotAllowed(allow.join(", ")))
            }
        }
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::routes::RouteId;

    #[test]
    fn finds_routes_and_explains_misses() {
        let router = Router::new();
        assert_eq!(
            router.find(&Method::GET, "/healthz").unwrap().route.id,
            RouteId::Healthz
        );
        assert_eq!(
            router.find(&Method::HEAD, "/healthz").unwrap().route.id,
            RouteId::Healthz
        );
        let asset = router.find(&Method::GET, "/assets/console/app.js").unwrap();
        assert_eq!(
            asset.params,
            vec![("path".to_owned(), "console/app.js".to_owned())]
        );
        assert_eq!(
            router.find(&Method::GET, "/nope").unwrap_err(),
            Miss::NotFound
        );
        assert_eq!(
            router.find(&Method::POST, "/healthz").unwrap_err(),
            Miss::MethodNotAllowed("GET, HEAD".into())
        );
    }
}
