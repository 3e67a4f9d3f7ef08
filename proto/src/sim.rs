//! The built-in flight model: a Beechcraft Baron 58 flying left-hand traffic patterns with low
//! approaches at San Francisco (KSFO runway 28L).
//!
//! Not a flight simulator, but every value follows from a small point-mass model so the numbers
//! agree with each other: position integrates ground velocity (true airspeed along the heading plus
//! wind), heading changes with the bank angle (rate of turn = g·tan φ / TAS), airspeed follows
//! thrust minus drag (flaps, gear and air brake add drag), pitch is flight-path angle plus angle of
//! attack from the lift equation, IAS/TAS/Mach come from the ISA atmosphere. A virtual pilot steers
//! the pattern; the autothrottle holds each leg's speed until a throttle command takes over.
//!
//! Frames units are the SDK's: radians, metres, m/s, Hz. Vectors: `Aircraft.Velocity`,
//! `Acceleration` and `Wind` are east/north/up (X/Y/Z); `AngularVelocity` is body roll/pitch/yaw
//! rate; airport locations are degrees (X latitude, Y longitude); runway points are ECEF metres.

use crate::command::{Command, CommandError};
use crate::telemetry::{var, VarId, Variables};
use std::collections::BTreeMap;
use std::f64::consts::{PI, TAU};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const G: f64 = 9.80665;
const EARTH_RADIUS: f64 = 6_371_008.8;
const KT: f64 = 0.514_444;

// Airframe (Baron 58, rounded).
const MASS: f64 = 2_300.0;
const WING_AREA: f64 = 18.5;
const CD0: f64 = 0.027;
const INDUCED_K: f64 = 0.045;
const POWER_PER_ENGINE: f64 = 224_000.0;
const STATIC_THRUST_PER_ENGINE: f64 = 3_800.0;
const PROP_EFFICIENCY: f64 = 0.8;
const ENGINES: usize = 2;

// KSFO 28L.
const THRESHOLD_LAT_DEG: f64 = 37.611_4;
const THRESHOLD_LON_DEG: f64 = -122.358_1;
const FIELD_ELEVATION: f64 = 4.0;
const RUNWAY_TRUE_HEADING_DEG: f64 = 298.0;
const RUNWAY_LENGTH: f64 = 3_618.0;
const MAGNETIC_VARIATION_DEG: f64 = 14.0; // east
const PATTERN_HEIGHT: f64 = 305.0; // 1000 ft AGL

/// Pattern legs: target point in runway coordinates (metres along the runway from the threshold,
/// metres left of the centreline), target height above the field (`None`: glide path), target IAS.
const LEGS: [(&str, f64, f64, Option<f64>, f64); 6] = [
    (
        "upwind",
        RUNWAY_LENGTH + 1_500.0,
        0.0,
        Some(PATTERN_HEIGHT),
        62.0,
    ),
    (
        "crosswind",
        RUNWAY_LENGTH + 1_500.0,
        2_200.0,
        Some(PATTERN_HEIGHT),
        65.0,
    ),
    ("downwind", -3_200.0, 2_200.0, Some(PATTERN_HEIGHT), 65.0),
    ("base", -3_200.0, 0.0, Some(200.0), 56.0),
    ("final", 0.0, 0.0, None, 51.0),
    ("low pass", 700.0, 0.0, Some(15.0), 51.0),
];

/// The aircraft state and the frame it produces.
pub struct Sim {
    vars: Variables,
    // Position relative to the threshold (east, north metres) and altitude MSL.
    east: f64,
    north: f64,
    altitude: f64,
    heading: f64,
    bank: f64,
    pitch: f64,
    tas: f64,
    ias: f64,
    ias_trend: f64,
    vertical_speed: f64,
    velocity: [f64; 3],
    acceleration: [f64; 3],
    rates: [f64; 3],
    leg: usize,
    throttle: [f64; 4],
    autothrottle: bool,
    flaps: f64,
    flaps_cmd: f64,
    gear: f64,
    gear_cmd: f64,
    air_brake: f64,
    selected_altitude: f64,
    selected_airspeed: Option<f64>,
    autopilot: bool,
    paused: bool,
    wind: [f64; 3],
    /// Accepted commands for names that frames do not carry (view, simulation controls, …).
    extra: BTreeMap<&'static str, f64>,
}

impl Sim {
    /// Starts on the downwind leg at pattern altitude, its clock (`Aircraft.UniversalTime`) at
    /// `now` (the shell reads the clock; the model does not).
    pub fn new(now: SystemTime) -> Self {
        let heading = wrap_2pi((RUNWAY_TRUE_HEADING_DEG + 180.0).to_radians());
        let (e, n) = runway_to_enu(-1_000.0, 2_200.0);
        let mut sim = Sim {
            vars: Variables::new(),
            east: e,
            north: n,
            altitude: FIELD_ELEVATION + PATTERN_HEIGHT,
            heading,
            bank: 0.0,
            pitch: 0.0,
            tas: 66.0,
            ias: 65.0,
            ias_trend: 0.0,
            vertical_speed: 0.0,
            velocity: [0.0; 3],
            acceleration: [0.0; 3],
            rates: [0.0; 3],
            leg: 2,
            throttle: [0.45, 0.45, 0.0, 0.0],
            autothrottle: true,
            flaps: 0.0,
            flaps_cmd: 0.0,
            gear: 0.0,
            gear_cmd: 0.0,
            air_brake: 0.0,
            selected_altitude: FIELD_ELEVATION + PATTERN_HEIGHT,
            selected_airspeed: None,
            autopilot: true,
            paused: false,
            wind: [4.0, -1.5, 0.0],
            extra: BTreeMap::new(),
        };
        sim.init_static();
        sim.step(0.0);
        sim.write_frame(now);
        sim
    }

    /// Accepted values for names frames do not carry.
    pub fn extra(&self, target: &str) -> Option<f64> {
        self.extra.get(target).copied()
    }

    fn init_static(&mut self) {
        let v = &mut self.vars;
        for (id, text) in [
            (var::AIRCRAFT_NAME, "Beechcraft Baron 58"),
            (var::AIRCRAFT_NEAREST_AIRPORT_IDENTIFIER, "KSFO"),
            (
                var::AIRCRAFT_NEAREST_AIRPORT_NAME,
                "San Francisco International",
            ),
            (var::AIRCRAFT_BEST_AIRPORT_IDENTIFIER, "KSFO"),
            (
                var::AIRCRAFT_BEST_AIRPORT_NAME,
                "San Francisco International",
            ),
            (var::AIRCRAFT_BEST_RUNWAY_IDENTIFIER, "28L"),
            (var::NAVIGATION_NAV1_IDENTIFIER, "SFO"),
            (var::NAVIGATION_NAV2_IDENTIFIER, "OSI"),
            (var::NAVIGATION_ILS1_IDENTIFIER, "ISFO"),
            (var::NAVIGATION_ILS2_IDENTIFIER, "IGWQ"),
            (var::AUTOPILOT_TYPE, "GFC 700"),
            (var::FLIGHT_MANAGEMENT_SYSTEM_FLIGHT_NUMBER, "AB58"),
        ] {
            v.set_text(id, text);
        }
        let hz = |mhz: f64| (mhz * 1000.0).round() * 1000.0;
        for (id, value) in [
            (var::NAVIGATION_NAV1_FREQUENCY, hz(115.8)),
            (var::NAVIGATION_NAV1_STANDBY_FREQUENCY, hz(113.9)),
            (var::NAVIGATION_NAV2_FREQUENCY, hz(113.9)),
            (var::NAVIGATION_NAV2_STANDBY_FREQUENCY, hz(115.8)),
            (var::NAVIGATION_ILS1_FREQUENCY, hz(109.55)),
            (var::NAVIGATION_ILS1_STANDBY_FREQUENCY, hz(111.7)),
            (var::NAVIGATION_ILS2_FREQUENCY, hz(111.7)),
            (var::NAVIGATION_ILS2_STANDBY_FREQUENCY, hz(109.55)),
            (var::NAVIGATION_ILS1_COURSE, 284f64.to_radians()),
            (var::NAVIGATION_ILS2_COURSE, 284f64.to_radians()),
            (var::NAVIGATION_SELECTED_COURSE1, 284f64.to_radians()),
            (var::NAVIGATION_SELECTED_COURSE2, 104f64.to_radians()),
            (var::NAVIGATION_DME1_FREQUENCY, hz(1166.0)),
            (var::NAVIGATION_DME2_FREQUENCY, hz(1137.0)),
            (var::NAVIGATION_ADF1_FREQUENCY, 379_000.0),
            (var::NAVIGATION_ADF1_STANDBY_FREQUENCY, 362_000.0),
            (var::NAVIGATION_ADF2_FREQUENCY, 362_000.0),
            (var::NAVIGATION_ADF2_STANDBY_FREQUENCY, 379_000.0),
            (var::COMMUNICATION_COM1_FREQUENCY, hz(120.5)),
            (var::COMMUNICATION_COM1_STANDBY_FREQUENCY, hz(118.85)),
            (var::COMMUNICATION_COM2_FREQUENCY, hz(121.8)),
            (var::COMMUNICATION_COM2_STANDBY_FREQUENCY, hz(135.45)),
            (var::COMMUNICATION_TRANSPONDER_CODE, 1200.0),
            (var::COMMUNICATION_TRANSPONDER_ALTITUDE, 1.0),
            (var::PERFORMANCE_SPEED_VS0, 75.0 * KT),
            (var::PERFORMANCE_SPEED_VS1, 85.0 * KT),
            (var::PERFORMANCE_SPEED_VFE, 152.0 * KT),
            (var::PERFORMANCE_SPEED_VNO, 195.0 * KT),
            (var::PERFORMANCE_SPEED_VNE, 223.0 * KT),
            (var::PERFORMANCE_SPEED_VAPP, 100.0 * KT),
            (var::PERFORMANCE_SPEED_MINIMUM, 85.0 * KT),
            (var::PERFORMANCE_SPEED_MAXIMUM, 223.0 * KT),
            (var::PERFORMANCE_SPEED_MINIMUM_FLAP_RETRACTION, 100.0 * KT),
            (var::PERFORMANCE_SPEED_MAXIMUM_FLAP_EXTENSION, 152.0 * KT),
            (var::CONFIGURATION_SELECTED_TAKE_OFF_FLAPS, 0.0),
            (var::CONFIGURATION_SELECTED_LANDING_FLAPS, 1.0),
            (var::AIRCRAFT_ANGLE_OF_ATTACK_LIMIT, 16f64.to_radians()),
            (var::AIRCRAFT_ACCELERATION_LIMIT, 3.8 * G),
            (var::AIRCRAFT_PITCH_TRIM_SCALING, 1.0),
            (var::AIRCRAFT_THROTTLE_LIMIT, 1.0),
            (var::AIRCRAFT_NEAREST_AIRPORT_ELEVATION, FIELD_ELEVATION),
            (var::AIRCRAFT_BEST_AIRPORT_ELEVATION, FIELD_ELEVATION),
            (var::AIRCRAFT_BEST_RUNWAY_ELEVATION, FIELD_ELEVATION),
            (var::AIRCRAFT_NEAREST_AIRPORT_LOCATION_X, 37.618_8),
            (var::AIRCRAFT_NEAREST_AIRPORT_LOCATION_Y, -122.375_4),
            (var::AIRCRAFT_BEST_AIRPORT_LOCATION_X, 37.618_8),
            (var::AIRCRAFT_BEST_AIRPORT_LOCATION_Y, -122.375_4),
            (var::AUTOPILOT_SELECTED_ALTITUDE_SCALE, 100.0 * 0.3048),
            (
                var::AUTOPILOT_SELECTED_VERTICAL_SPEED,
                700.0 * 0.3048 / 60.0,
            ),
            (var::AUTOPILOT_SELECTED_HEADING, 284f64.to_radians()),
            (var::CONTROLS_MAGNETOS1, 3.0),
            (var::CONTROLS_MIXTURE1, 1.0),
            (var::CONTROLS_MIXTURE2, 1.0),
            (var::CONTROLS_PROPELLER1, 1.0),
            (var::CONTROLS_PROPELLER2, 1.0),
            (var::CONTROLS_FUEL_SELECTOR, 1.0),
            (var::CONTROLS_BATTERY_MASTER, 1.0),
            (var::CONTROLS_AVIONICS, 1.0),
            (var::CONTROLS_NAVIGATION, 1.0),
            (var::CONTROLS_BEACON, 1.0),
            (var::CONTROLS_STROBE, 1.0),
            (var::CONTROLS_GENERATOR1, 1.0),
            (var::CONTROLS_GENERATOR2, 1.0),
            (var::AIRCRAFT_GENERATOR1, 1.0),
            (var::AIRCRAFT_GENERATOR2, 1.0),
        ] {
            v.set(id, value);
        }
        for i in 0..ENGINES {
            v.set(VarId(var::AIRCRAFT_ENGINE_MASTER1.0 + i), 1.0);
            v.set(VarId(var::AIRCRAFT_IGNITION1.0 + i), 1.0);
            v.set(VarId(var::AIRCRAFT_ENGINE_RUNNING1.0 + i), 1.0);
            v.set(VarId(var::CONTROLS_FUEL1.0 + i), 1.0);
            v.set(VarId(var::CONTROLS_MASTER1.0 + i), 1.0);
            v.set(VarId(var::CONTROLS_IGNITION1.0 + i), 1.0);
        }
        let threshold = ecef(
            THRESHOLD_LAT_DEG.to_radians(),
            THRESHOLD_LON_DEG.to_radians(),
            FIELD_ELEVATION,
        );
        let (ee, en) = runway_to_enu(RUNWAY_LENGTH, 0.0);
        let (lat_end, lon_end) = enu_to_latlon(ee, en);
        let end = ecef(lat_end, lon_end, FIELD_ELEVATION);
        for (i, c) in threshold.iter().enumerate() {
            v.set(VarId(var::AIRCRAFT_BEST_RUNWAY_THRESHOLD_X.0 + i), *c);
        }
        for (i, c) in end.iter().enumerate() {
            v.set(VarId(var::AIRCRAFT_BEST_RUNWAY_END_X.0 + i), *c);
        }
    }

    /// Advances the model by `dt` seconds.
    fn step(&mut self, dt: f64) {
        let (rho, sound) = isa(self.altitude);
        let sigma = rho / 1.225;

        // Configuration surfaces move at finite rates.
        self.flaps = approach(self.flaps, self.flaps_cmd, 0.1 * dt);
        self.gear = approach(self.gear, self.gear_cmd, 0.15 * dt);

        // Lateral guidance: fly towards the current leg's end point.
        let (name, x, y, height, leg_speed) = LEGS[self.leg];
        let (te, tn) = runway_to_enu(x, y);
        let (de, dn) = (te - self.east, tn - self.north);
        let distance = de.hypot(dn);
        let track = self.velocity[0].atan2(self.velocity[1]);
        let bearing = de.atan2(dn);
        let along = -(de * self.velocity[0] + dn * self.velocity[1]);
        if distance < 250.0 || (distance < 1_200.0 && along > 0.0 && name != "final") {
            self.leg = (self.leg + 1) % LEGS.len();
        }
        let track_error = if self.tas > 1.0 {
            wrap_pi(bearing - track)
        } else {
            0.0
        };
        let bank_cmd = (track_error * 1.4).clamp(-25f64.to_radians(), 25f64.to_radians());
        let new_bank = approach(self.bank, bank_cmd, 8f64.to_radians() * dt);
        let roll_rate = if dt > 0.0 {
            (new_bank - self.bank) / dt
        } else {
            0.0
        };
        self.bank = new_bank;
        let turn_rate = G * self.bank.tan() / self.tas.max(20.0);
        self.heading = wrap_2pi(self.heading + turn_rate * dt);

        // Vertical guidance: hold the leg's height (the selected altitude on pattern legs), or a
        // 3° glide path to the threshold on final.
        let elevation = FIELD_ELEVATION;
        let target_alt = match height {
            Some(h) if h == PATTERN_HEIGHT => self.selected_altitude,
            Some(h) => elevation + h,
            None => elevation + (distance * 3f64.to_radians().tan()).max(15.0),
        };
        let ground_speed = self.velocity[0].hypot(self.velocity[1]);
        let mut vs_cmd = (0.15 * (target_alt - self.altitude)).clamp(-5.0, 5.0);
        if height.is_none() {
            vs_cmd = (-ground_speed * 3f64.to_radians().tan() + 0.2 * (target_alt - self.altitude))
                .clamp(-6.0, 2.0);
        }
        let new_vs = approach(self.vertical_speed, vs_cmd, 1.5 * dt);
        let vs_accel = if dt > 0.0 {
            (new_vs - self.vertical_speed) / dt
        } else {
            0.0
        };
        self.vertical_speed = new_vs;

        // Longitudinal: thrust, drag and the climb share of gravity decide the speed.
        let gamma = (self.vertical_speed / self.tas.max(1.0))
            .clamp(-0.5, 0.5)
            .asin();
        let q = 0.5 * rho * self.tas * self.tas;
        let lift_coeff =
            (MASS * G * gamma.cos() / self.bank.cos().max(0.3)) / (q * WING_AREA).max(1.0);
        let drag_coeff = CD0
            + 0.035 * self.flaps
            + 0.022 * self.gear
            + 0.06 * self.air_brake
            + INDUCED_K * lift_coeff * lift_coeff;
        let drag = q * WING_AREA * drag_coeff;
        let available = |throttle: f64| {
            let power = POWER_PER_ENGINE * throttle * sigma.powf(0.8);
            (PROP_EFFICIENCY * power / self.tas.max(20.0)).min(STATIC_THRUST_PER_ENGINE * throttle)
        };
        let target_ias = self.selected_airspeed.unwrap_or(leg_speed);
        if self.autothrottle {
            let needed = drag + MASS * G * gamma.sin() + MASS * 0.15 * (target_ias - self.ias);
            let per_engine_full = available(1.0);
            let wanted = (needed / (ENGINES as f64 * per_engine_full)).clamp(0.05, 1.0);
            let t = approach(self.throttle[0], wanted, 0.25 * dt);
            self.throttle[..ENGINES].fill(t);
        }
        let thrust: f64 = self.throttle[..ENGINES].iter().map(|t| available(*t)).sum();
        let accel = (thrust - drag) / MASS - G * gamma.sin();
        self.tas = (self.tas + accel * dt).clamp(25.0, 140.0);
        let new_ias = self.tas * sigma.sqrt();
        let trend = if dt > 0.0 {
            (new_ias - self.ias) / dt
        } else {
            0.0
        };
        self.ias_trend += (trend - self.ias_trend) * (dt / 0.5).min(1.0);
        self.ias = new_ias;

        // Attitude.
        let (cl0, cl_alpha) = (0.25 + 0.55 * self.flaps, 5.2);
        let aoa = (lift_coeff - cl0) / cl_alpha;
        let new_pitch = gamma + aoa * self.bank.cos();
        let pitch_rate = if dt > 0.0 {
            (new_pitch - self.pitch) / dt
        } else {
            0.0
        };
        self.pitch = new_pitch;
        self.rates = [roll_rate, pitch_rate, turn_rate * self.bank.cos()];

        // Kinematics: ground velocity = air velocity + wind.
        let horizontal = self.tas * gamma.cos();
        let velocity = [
            horizontal * self.heading.sin() + self.wind[0],
            horizontal * self.heading.cos() + self.wind[1],
            self.vertical_speed,
        ];
        if dt > 0.0 {
            for (a, (v, old)) in self
                .acceleration
                .iter_mut()
                .zip(velocity.iter().zip(self.velocity))
            {
                *a = (v - old) / dt;
            }
            self.acceleration[2] = vs_accel;
        }
        self.velocity = velocity;
        self.east += velocity[0] * dt;
        self.north += velocity[1] * dt;
        self.altitude += velocity[2] * dt;

        let v = &mut self.vars;
        v.set(var::AIRCRAFT_ANGLE_OF_ATTACK, aoa);
        v.set(var::AIRCRAFT_MACH_NUMBER, self.tas / sound);
    }

    fn write_frame(&mut self, now: SystemTime) {
        let (lat, lon) = enu_to_latlon(self.east, self.north);
        let height = self.altitude - FIELD_ELEVATION;
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let ground_speed = self.velocity[0].hypot(self.velocity[1]);
        let power = self.throttle[..ENGINES].iter().sum::<f64>() / ENGINES as f64;
        let at_altitude = (self.altitude - self.selected_altitude).abs() < 15.0;
        let v = &mut self.vars;
        for (id, value) in [
            (
                var::AIRCRAFT_UNIVERSAL_TIME,
                since_epoch.rem_euclid(86_400.0),
            ),
            (var::AIRCRAFT_ALTITUDE, self.altitude),
            (var::AIRCRAFT_VERTICAL_SPEED, self.vertical_speed),
            (var::AIRCRAFT_PITCH, self.pitch),
            (var::AIRCRAFT_BANK, self.bank),
            (var::AIRCRAFT_INDICATED_AIRSPEED, self.ias),
            (var::AIRCRAFT_INDICATED_AIRSPEED_TREND, self.ias_trend),
            (var::AIRCRAFT_GROUND_SPEED, ground_speed),
            (
                var::AIRCRAFT_MAGNETIC_HEADING,
                wrap_2pi(self.heading - MAGNETIC_VARIATION_DEG.to_radians()),
            ),
            (var::AIRCRAFT_TRUE_HEADING, self.heading),
            (var::AIRCRAFT_LATITUDE, lat),
            (var::AIRCRAFT_LONGITUDE, lon),
            (var::AIRCRAFT_HEIGHT, height),
            (var::AIRCRAFT_ORIENTATION, self.heading),
            (
                var::AIRCRAFT_RATE_OF_TURN,
                self.rates[2] / self.bank.cos().max(0.3),
            ),
            (var::AIRCRAFT_GEAR, self.gear),
            (var::AIRCRAFT_FLAPS, self.flaps),
            (var::AIRCRAFT_SLATS, 0.0),
            (var::AIRCRAFT_THROTTLE, power),
            (var::AIRCRAFT_AIR_BRAKE, self.air_brake),
            (var::AIRCRAFT_RADAR_ALTITUDE, height.clamp(0.0, 2_500.0)),
            (var::AIRCRAFT_ON_GROUND, 0.0),
            (var::AIRCRAFT_ON_RUNWAY, 0.0),
            (var::AIRCRAFT_POWER, power),
            (var::AIRCRAFT_NORMALIZED_POWER, power),
            (var::AIRCRAFT_NORMALIZED_POWER_TARGET, power),
            (var::CONTROLS_FLAPS, self.flaps_cmd),
            (var::CONTROLS_GEAR, self.gear_cmd),
            (var::CONTROLS_AIR_BRAKE, self.air_brake),
            (var::AUTOPILOT_ENGAGED, self.autopilot as u8 as f64),
            (var::AUTOPILOT_MASTER, self.autopilot as u8 as f64),
            (
                var::AUTOPILOT_ALTITUDE,
                (self.autopilot && at_altitude) as u8 as f64,
            ),
            (var::AUTOPILOT_HEADING, self.autopilot as u8 as f64),
            (var::AUTOPILOT_SELECTED_ALTITUDE, self.selected_altitude),
            (
                var::AUTOPILOT_SELECTED_AIRSPEED,
                self.selected_airspeed.unwrap_or(LEGS[self.leg].4),
            ),
            (
                var::AUTOPILOT_TARGET_AIRSPEED,
                self.selected_airspeed.unwrap_or(LEGS[self.leg].4),
            ),
            (
                var::AUTOPILOT_THROTTLE_ENGAGED,
                self.autothrottle as u8 as f64,
            ),
            (var::AIRCRAFT_VELOCITY_X, self.velocity[0]),
            (var::AIRCRAFT_VELOCITY_Y, self.velocity[1]),
            (var::AIRCRAFT_VELOCITY_Z, self.velocity[2]),
            (var::AIRCRAFT_ANGULAR_VELOCITY_X, self.rates[0]),
            (var::AIRCRAFT_ANGULAR_VELOCITY_Y, self.rates[1]),
            (var::AIRCRAFT_ANGULAR_VELOCITY_Z, self.rates[2]),
            (var::AIRCRAFT_ACCELERATION_X, self.acceleration[0]),
            (var::AIRCRAFT_ACCELERATION_Y, self.acceleration[1]),
            (var::AIRCRAFT_ACCELERATION_Z, self.acceleration[2]),
            (var::AIRCRAFT_WIND_X, self.wind[0]),
            (var::AIRCRAFT_WIND_Y, self.wind[1]),
            (var::AIRCRAFT_WIND_Z, self.wind[2]),
        ] {
            v.set(id, value);
        }
        for i in 0..4 {
            let t = self.throttle[i];
            let running = i < ENGINES;
            v.set(VarId(var::CONTROLS_THROTTLE1.0 + i), t);
            let rpm = if running { 1_900.0 + 800.0 * t } else { 0.0 };
            v.set(VarId(var::AIRCRAFT_ENGINE_ROTATION_SPEED1.0 + i), rpm);
        }
        let (lateral, vertical, armed_vertical) = match (self.autopilot, at_altitude) {
            (false, _) => ("", "", ""),
            (true, true) => ("HDG", "ALT", ""),
            (true, false) => ("HDG", "VS", "ALTS"),
        };
        v.set_text(var::AUTOPILOT_ACTIVE_LATERAL_MODE, lateral);
        v.set_text(var::AUTOPILOT_ACTIVE_VERTICAL_MODE, vertical);
        v.set_text(var::AUTOPILOT_ARMED_VERTICAL_MODE, armed_vertical);
        v.set_text(
            var::AUTOPILOT_ARMED_LATERAL_MODE,
            if self.autopilot { "NAV" } else { "" },
        );
        v.set_text(
            var::AUTOPILOT_ACTIVE_AUTO_THROTTLE_MODE,
            if self.autothrottle { "SPD" } else { "" },
        );
    }

    fn swap(&mut self, active: VarId, standby: VarId) {
        let (a, s) = (self.vars.number(active), self.vars.number(standby));
        self.vars.set(active, s);
        self.vars.set(standby, a);
    }
}

impl Sim {
    /// One line for the startup log.
    pub fn describe(&self) -> String {
        "built-in flight model (Beechcraft Baron 58, traffic pattern at KSFO 28L)".to_string()
    }

    /// Brings the model up to `now` (`dt` since the previous call); always live.
    pub fn advance(&mut self, now: SystemTime, dt: Duration) -> bool {
        if !self.paused {
            // A stalled tick thread must not make the aircraft jump: cap the step, sub-step it.
            let mut remaining = dt.as_secs_f64().min(0.5);
            while remaining > 0.0 {
                let h = remaining.min(0.05);
                self.step(h);
                remaining -= h;
            }
        }
        self.write_frame(now);
        true
    }

    /// The values for the frame being built.
    pub fn variables(&self) -> &Variables {
        &self.vars
    }

    /// Applies a validated command; the next frame shows it.
    pub fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        let value = command.value;
        let on = value >= 0.5;
        let target = command.name.target;
        let engine = |prefix: &str| {
            target
                .strip_prefix(prefix)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (1..=4).contains(n))
        };
        let mut shown = command.name.telemetry.is_some();
        match target {
            "Controls.Throttle" => {
                self.throttle = [value; 4];
                self.autothrottle = false;
                shown = true;
            }
            _ if engine("Controls.Throttle").is_some() => {
                self.throttle[engine("Controls.Throttle").unwrap() - 1] = value;
                self.autothrottle = false;
            }
            "Controls.Flaps" => self.flaps_cmd = value,
            "Controls.Gear" => self.gear_cmd = value,
            "Controls.AirBrake" | "Controls.GliderAirBrake" => {
                self.air_brake = value;
                shown = true;
            }
            "Controls.Mixture" => {
                for i in 0..4 {
                    self.vars.set(VarId(var::CONTROLS_MIXTURE1.0 + i), value);
                }
                shown = true;
            }
            _ if engine("Controls.PropellerSpeed").is_some() => {
                self.vars.set(
                    VarId(
                        var::CONTROLS_PROPELLER1.0 + engine("Controls.PropellerSpeed").unwrap() - 1,
                    ),
                    value,
                );
                shown = true;
            }
            "Autopilot.SelectedAltitude" => self.selected_altitude = value,
            "Autopilot.SelectedAirspeed" | "Autopilot.SelectedSpeed" => {
                self.selected_airspeed = Some(value);
                self.autothrottle = true;
            }
            "Autopilot.Master" => self.autopilot = on,
            "Autopilot.Disengage" if on => self.autopilot = false,
            "Simulation.Pause" => self.paused = on,
            "Navigation.NAV1FrequencySwap" if on => self.swap(
                var::NAVIGATION_NAV1_FREQUENCY,
                var::NAVIGATION_NAV1_STANDBY_FREQUENCY,
            ),
            "Navigation.NAV2FrequencySwap" if on => self.swap(
                var::NAVIGATION_NAV2_FREQUENCY,
                var::NAVIGATION_NAV2_STANDBY_FREQUENCY,
            ),
            "Navigation.ILS1FrequencySwap" if on => self.swap(
                var::NAVIGATION_ILS1_FREQUENCY,
                var::NAVIGATION_ILS1_STANDBY_FREQUENCY,
            ),
            "Navigation.ILS2FrequencySwap" if on => self.swap(
                var::NAVIGATION_ILS2_FREQUENCY,
                var::NAVIGATION_ILS2_STANDBY_FREQUENCY,
            ),
            "Navigation.ADF1FrequencySwap" if on => self.swap(
                var::NAVIGATION_ADF1_FREQUENCY,
                var::NAVIGATION_ADF1_STANDBY_FREQUENCY,
            ),
            "Navigation.ADF2FrequencySwap" if on => self.swap(
                var::NAVIGATION_ADF2_FREQUENCY,
                var::NAVIGATION_ADF2_STANDBY_FREQUENCY,
            ),
            "Communication.COM1FrequencySwap" if on => self.swap(
                var::COMMUNICATION_COM1_FREQUENCY,
                var::COMMUNICATION_COM1_STANDBY_FREQUENCY,
            ),
            "Communication.COM2FrequencySwap" if on => self.swap(
                var::COMMUNICATION_COM2_FREQUENCY,
                var::COMMUNICATION_COM2_STANDBY_FREQUENCY,
            ),
            _ => {}
        }
        match command.name.telemetry {
            // Model-driven keys are rewritten from the state every frame; the rest keep the value.
            Some(id) => self.vars.set(id, value),
            None if !shown => {
                self.extra.insert(command.name.target, value);
            }
            None => {}
        }
        Ok(())
    }
}

fn approach(current: f64, target: f64, max_step: f64) -> f64 {
    current + (target - current).clamp(-max_step, max_step)
}

fn wrap_2pi(a: f64) -> f64 {
    a.rem_euclid(TAU)
}

fn wrap_pi(a: f64) -> f64 {
    (a + PI).rem_euclid(TAU) - PI
}

/// Runway coordinates (metres along 28L from its threshold, metres left) → east/north metres.
fn runway_to_enu(along: f64, left: f64) -> (f64, f64) {
    let h = RUNWAY_TRUE_HEADING_DEG.to_radians();
    let (ue, un) = (h.sin(), h.cos());
    let (le, ln) = (-un, ue);
    (along * ue + left * le, along * un + left * ln)
}

/// East/north metres from the threshold → latitude/longitude in radians.
fn enu_to_latlon(east: f64, north: f64) -> (f64, f64) {
    let lat0 = THRESHOLD_LAT_DEG.to_radians();
    let lat = lat0 + north / EARTH_RADIUS;
    let lon = THRESHOLD_LON_DEG.to_radians() + east / (EARTH_RADIUS * lat0.cos());
    (lat, lon)
}

/// WGS-84 geodetic → earth-centred, earth-fixed metres.
fn ecef(lat: f64, lon: f64, height: f64) -> [f64; 3] {
    const A: f64 = 6_378_137.0;
    const E2: f64 = 6.694_379_990_14e-3;
    let n = A / (1.0 - E2 * lat.sin().powi(2)).sqrt();
    [
        (n + height) * lat.cos() * lon.cos(),
        (n + height) * lat.cos() * lon.sin(),
        (n * (1.0 - E2) + height) * lat.sin(),
    ]
}

/// ISA troposphere: density (kg/m³) and speed of sound (m/s) at `altitude` metres.
fn isa(altitude: f64) -> (f64, f64) {
    let t = 288.15 - 0.0065 * altitude.clamp(-1_000.0, 11_000.0);
    let p = 101_325.0 * (t / 288.15).powf(5.255_88);
    (p / (287.053 * t), (1.4 * 287.053 * t).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{ValueKind, VARIABLES};

    fn run(sim: &mut Sim, seconds: f64) {
        let mut t = SystemTime::now();
        for _ in 0..(seconds * 50.0) as usize {
            t += Duration::from_millis(20);
            sim.advance(t, Duration::from_millis(20));
            for (i, v) in VARIABLES.iter().enumerate() {
                if v.kind == ValueKind::Number {
                    assert!(
                        sim.vars.number(VarId(i)).is_finite(),
                        "{} not finite",
                        v.name
                    );
                }
            }
        }
    }

    #[test]
    fn flies_a_consistent_pattern_for_ten_minutes() {
        let mut sim = Sim::new(SystemTime::now());
        let mut legs_seen = std::collections::BTreeSet::new();
        let mut last_lat = sim.vars.number(var::AIRCRAFT_LATITUDE);
        for _ in 0..600 {
            run(&mut sim, 1.0);
            legs_seen.insert(sim.leg);
            let v = &sim.vars;
            let lat = v.number(var::AIRCRAFT_LATITUDE);
            // Moves smoothly: at most ~100 m/s of latitude change per second.
            assert!(((lat - last_lat) * EARTH_RADIUS).abs() < 100.0);
            last_lat = lat;
            let ias = v.number(var::AIRCRAFT_INDICATED_AIRSPEED);
            assert!((35.0..90.0).contains(&ias), "ias {ias}");
            assert!(v.number(var::AIRCRAFT_HEIGHT) > 5.0);
            assert!(v.number(var::AIRCRAFT_BANK).abs() <= 25f64.to_radians() + 1e-9);
            let expected_rot = G * v.number(var::AIRCRAFT_BANK).tan() / sim.tas.max(20.0);
            assert!(
                (v.number(var::AIRCRAFT_RATE_OF_TURN) - expected_rot).abs()
                    <= 0.01 * expected_rot.abs() + 1e-9
            );
        }
        assert_eq!(
            legs_seen.len(),
            LEGS.len(),
            "every leg flown: {legs_seen:?}"
        );
    }

    fn command(name: &str, value: f64) -> Command {
        Command {
            name: crate::telemetry::table::command_name(name).unwrap(),
            value,
            id: None,
        }
    }

    #[test]
    fn throttle_drives_speed_and_drag_slows() {
        let mut sim = Sim::new(SystemTime::now());
        run(&mut sim, 5.0);
        sim.apply(&command("Controls.Throttle", 1.0)).unwrap();
        run(&mut sim, 0.02);
        assert_eq!(sim.vars.number(var::CONTROLS_THROTTLE1), 1.0);
        assert_eq!(sim.vars.number(var::CONTROLS_THROTTLE2), 1.0);
        let before = sim.ias;
        run(&mut sim, 20.0);
        assert!(sim.ias > before + 5.0, "{before} → {}", sim.ias);
        let fast = sim.ias;
        sim.apply(&command("Controls.Flaps", 1.0)).unwrap();
        sim.apply(&command("Controls.Gear", 1.0)).unwrap();
        run(&mut sim, 30.0);
        assert!(sim.ias < fast - 5.0, "{fast} → {}", sim.ias);
        assert_eq!(sim.vars.number(var::AIRCRAFT_GEAR), 1.0);
    }

    #[test]
    fn selected_altitude_makes_it_climb_and_values_show_next_frame() {
        let mut sim = Sim::new(SystemTime::now());
        sim.leg = 1; // crosswind: holds the selected altitude
        let start = sim.altitude;
        sim.apply(&command("Autopilot.SelectedAltitude", start + 300.0))
            .unwrap();
        sim.apply(&command("Communication.COM1FrequencySwap", 1.0))
            .unwrap();
        sim.apply(&command("View.Zoom", 0.3)).unwrap();
        run(&mut sim, 0.02);
        assert_eq!(
            sim.vars.number(var::AUTOPILOT_SELECTED_ALTITUDE),
            start + 300.0
        );
        assert_eq!(
            sim.vars.number(var::COMMUNICATION_COM1_FREQUENCY),
            118_850_000.0
        );
        assert_eq!(sim.extra("View.Zoom"), Some(0.3));
        run(&mut sim, 10.0);
        assert!(sim.vars.number(var::AIRCRAFT_VERTICAL_SPEED) > 2.0);
        assert!(sim.altitude > start + 20.0);
    }
}
