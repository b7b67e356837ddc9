//! Images that cannot be pulled here (no registry is reachable), built locally with the layout
//! of the upstream image so that stack definitions run unchanged in tests.
//!
//! [`keycloak_image`] is a stand-in for `quay.io/keycloak/keycloak:VERSION`: the real
//! distribution from Maven Central (the one the realm suites run) in `/opt/keycloak`, owned by
//! uid 1000 as upstream, on the shared Debian bookworm root with the host's JDK (>= 21) in
//! `/opt/java`; `USER 1000`, `ENTRYPOINT ["/opt/keycloak/bin/kc.sh"]`, ports 8080/8443. It
//! carries the label `org.kagent.test.stand-in=RECIPE` and is tagged with the upstream name, so a
//! `container` resource naming the upstream image finds it and never pulls.

use std::process::Command;
use std::sync::OnceLock;

use crate::docker::{docker, require_docker};

/// Bumped when the recipe changes, so a machine's cached stand-in is rebuilt.
const RECIPE: &str = "2";
const KEYCLOAK_LOCK: &str = "/tmp/kagent-tests-keycloak-image.lock";

/// The upstream name the stand-in is tagged with.
pub fn keycloak_image_name() -> String {
    format!("quay.io/keycloak/keycloak:{}", crate::keycloak::version())
}

/// The Keycloak image stand-in, built on first use (about a minute; once per machine).
pub fn keycloak_image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        require_docker();
        let image = keycloak_image_name();
        let label = docker(&[
            "image",
            "inspect",
            "--format",
            "{{index .Config.Labels \"org.kagent.test.stand-in\"}}",
            &image,
        ]);
        if label.status.success() && String::from_utf8_lossy(&label.stdout).trim() == RECIPE {
            return image;
        }
        let dist = crate::keycloak::dist();
        let java = crate::keycloak::java_home();
        let bookworm = crate::rootfs::bookworm();
        let work = crate::rootfs::testroots();
        let script = format!(
            r#"set -e
[ "$(docker image inspect --format '{{{{index .Config.Labels "org.kagent.test.stand-in"}}}}' {image} 2>/dev/null)" = "{recipe}" ] && exit 0
root=$(mktemp -d -p {work} keycloak-image-XXXXXX)
trap 'rm -rf "$root"' EXIT
cp -a --reflink=auto {bookworm}/. "$root"
mkdir -p "$root/opt"
cp -a {java} "$root/opt/java"
# The JDK's cacerts is often a link into the host's /etc/ssl: copy what it points at
# (Keycloak refuses to start without a system trust store).
cp --remove-destination -L {java}/lib/security/cacerts "$root/opt/java/lib/security/cacerts"
cp -a {dist} "$root/opt/keycloak"
mkdir -p "$root/opt/keycloak/data"
echo 'keycloak:x:1000:0:keycloak:/opt/keycloak:/sbin/nologin' >> "$root/etc/passwd"
chown -R 1000:0 "$root/opt/keycloak"
chmod -R g+rwX "$root/opt/keycloak"
tar -C "$root" -c . | docker import \
  --change 'USER 1000' \
  --change 'ENV JAVA_HOME=/opt/java' \
  --change 'ENV PATH=/opt/java/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=en_US.UTF-8' \
  --change 'WORKDIR /opt/keycloak' \
  --change 'EXPOSE 8080 8443 9000' \
  --change 'LABEL org.kagent.test.stand-in={recipe}' \
  --change 'ENTRYPOINT ["/opt/keycloak/bin/kc.sh"]' \
  - {image} >/dev/null
"#,
            image = image,
            work = work.display(),
            bookworm = bookworm.display(),
            java = java.display(),
            dist = dist.display(),
            recipe = RECIPE,
        );
        let started = std::time::Instant::now();
        let out = Command::new("flock")
            .args([KEYCLOAK_LOCK, "sh", "-c", &script])
            .output()
            .expect("run flock (util-linux)");
        assert!(
            out.status.success(),
            "building the Keycloak image stand-in {image} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("built {image} in {:.1}s", started.elapsed().as_secs_f64());
        image
    })
}
